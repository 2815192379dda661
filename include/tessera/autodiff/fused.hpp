// Free-form elementwise expressions of Vars, recorded whole and fused: Adept's design (expression templates plus a
// tape) on tensors. `a * b`, `tanh(x)`, `x + 2`, ... on Vars return an ad::expr: a Var whose value is not computed
// yet, holding the expression tree by value (its leaves are the Vars it reads). The first use that needs the value
// (an operation that is not elementwise, .value(), backward(), a copy into a Var) evaluates the whole tree in ONE
// fused pass and records ONE node on the tape; that node's backward computes the gradient of every Var in the tree
// in ONE fused pass: the partial derivatives are derived at compile time (the reverse sweep over the tree), every
// occurrence of a leaf evaluated in the same loop and each leaf's gradient written once (backend<P>'s
// elementwise_multi). So tanh(a * b + c) * sigmoid(a - c) costs one pass forward (3 reads, 1 write) and one pass
// backward (4 reads, 3 writes), where op-by-op it took 5 and about 12.
//
// Operands of different shapes broadcast as usual; the gradient of a broadcast leaf is then computed in a pass of
// its own and summed down to its shape (and a backend without elementwise_multi runs one pass per leaf: CUDA today).
// Like Eigen's expressions, `auto y = a * b;` holds the unevaluated tree and reads its leaves when it is evaluated:
// do not change a leaf in place (an optimizer step) between building an expression and using it; assign it to a
// Var (`ad::Var<float, 2> y = a * b;`) to evaluate it at once.
#pragma once
#include <array>
#include <string>
#include <memory>
#include <tuple>
#include <type_traits>
#include <vector>

#include "tessera/autodiff/var.hpp"
#include "tessera/expr/views.hpp"
#include "tessera/kernels/cpu/backend.hpp"
#if defined(__CUDACC__)
#include "tessera/kernels/cuda/backend.hpp"
#include "tessera/policy/cuda.hpp"
#endif

namespace tessera::ad {

namespace detail {
/// grad += t summed down to grad's shape (t's dims broadcast from grad's, aligned right); both contiguous.
template <class G, class Src>
void add_reduced(G& grad, const Src& t) {
  static_assert(G::rank <= Src::rank);
  backend<typename G::policy>::add_reduced(grad.data(), grad.dims(), t.data(), t.dims());
}

/// v.grad += g (an expression of the output's dims), reduced over dims where v was broadcast.
template <class T, int R, class P, class E>
void accumulate(const Var<T, R, P>& v, const E& g) {
  if (!v.requires_grad()) return;
  auto& gb = v.node().grad_buffer();
  using EE = std::remove_cvref_t<E>;
  if constexpr (EE::rank == R) {
    if (g.expr_dims() == gb.dims()) {
      gb = gb + g;
      return;
    }
  }
  Tensor<T, dyn_shape_t<EE::rank>, P> t(g);
  add_reduced(gb, t);
}

template <int RA, int RB>
inline constexpr int max_rank = RA > RB ? RA : RB;

// ---- the expression tree (fx: fused expression) ----
// Every node offers fwd<Flat>(n): the tessera expression of its value (Flat: over rank-1 views of n elements, for
// the fused backward loop), grads<Flat>(adj, n): a tuple of the gradient expressions of its leaf occurrences, left
// to right, given the expression `adj` of d(result)/d(this node), and leaves(f): f(var) for each leaf occurrence in
// the same order.
namespace fx {

template <class T, int R, class P>
struct leaf {
  Var<T, R, P> v;
  static constexpr int count = 1;
  template <bool Flat>
  decltype(auto) fwd(index_t n) const {
    if constexpr (Flat) return tessera::reshape<dyn_shape_t<1>>(v.value(), dims_t<1>{n});
    else return (v.value());
  }
  template <bool Flat, class Adj>
  auto grads(const Adj& adj, index_t) const { return std::tuple<Adj>(adj); }
  template <class F>
  void leaves(F&& f) const { f(v); }
  static std::string str(int& k) { return "x" + std::to_string(k++); }
};

template <class T>
struct constant {
  T c;
  static constexpr int count = 0;
  template <bool Flat>
  T fwd(index_t) const { return c; }
  template <bool Flat, class Adj>
  std::tuple<> grads(const Adj&, index_t) const { return {}; }
  template <class F>
  void leaves(F&&) const {}
  static std::string str(int&) { return "c"; }
};

struct add {};
struct sub {};
struct mul {};
struct div {};

template <class Op, class A, class B>
struct binary {
  A a;
  B b;
  static constexpr int count = A::count + B::count;
  template <bool Flat>
  auto fwd(index_t n) const {
    if constexpr (std::is_same_v<Op, add>) return a.template fwd<Flat>(n) + b.template fwd<Flat>(n);
    else if constexpr (std::is_same_v<Op, sub>) return a.template fwd<Flat>(n) - b.template fwd<Flat>(n);
    else if constexpr (std::is_same_v<Op, mul>) return a.template fwd<Flat>(n) * b.template fwd<Flat>(n);
    else return a.template fwd<Flat>(n) / b.template fwd<Flat>(n);
  }
  template <bool Flat, class Adj>
  auto grads(const Adj& g, index_t n) const {
    if constexpr (std::is_same_v<Op, add>) {
      return std::tuple_cat(a.template grads<Flat>(g, n), b.template grads<Flat>(g, n));
    } else if constexpr (std::is_same_v<Op, sub>) {
      return std::tuple_cat(a.template grads<Flat>(g, n), b.template grads<Flat>(-g, n));
    } else if constexpr (std::is_same_v<Op, mul>) {
      return std::tuple_cat(a.template grads<Flat>(g * b.template fwd<Flat>(n), n), b.template grads<Flat>(g * a.template fwd<Flat>(n), n));
    } else {  // d/da = g / b, d/db = -g a / b^2
      return std::tuple_cat(a.template grads<Flat>(g / b.template fwd<Flat>(n), n),
                            b.template grads<Flat>(-(g * a.template fwd<Flat>(n)) / (b.template fwd<Flat>(n) * b.template fwd<Flat>(n)), n));
    }
  }
  template <class F>
  void leaves(F&& f) const {
    a.leaves(f);
    b.leaves(f);
  }
  static std::string str(int& k) {
    const char* op = std::is_same_v<Op, add> ? " + " : std::is_same_v<Op, sub> ? " - " : std::is_same_v<Op, mul> ? " * " : " / ";
    std::string l = A::str(k);
    return "(" + l + op + B::str(k) + ")";
  }
};

// The unary functions: the value, and d(value)/dx times the incoming gradient g (as the op-by-op rules did).
#define TS_FX_UNARY(NAME, VALUE, GRAD)                             \
  struct NAME {                                                    \
    static constexpr const char* name = #NAME;                     \
    template <class T, class X>                                    \
    static auto value(const X& x) { return VALUE; }                \
    template <class T, class X, class G>                           \
    static auto grad(const X& x, const G& g) { return GRAD; }      \
  };
TS_FX_UNARY(neg, -x, -g)
TS_FX_UNARY(exp, tessera::exp(x), g * tessera::exp(x))
TS_FX_UNARY(log, tessera::log(x), g / x)
TS_FX_UNARY(sqrt, tessera::sqrt(x), g * T(0.5) / tessera::sqrt(x))
TS_FX_UNARY(tanh, tessera::tanh(x), g * (T(1) - tessera::tanh(x) * tessera::tanh(x)))
TS_FX_UNARY(sigmoid, tessera::sigmoid(x), g * tessera::sigmoid(x) * (T(1) - tessera::sigmoid(x)))
// PyTorch's threshold_backward: 0 where the output is <= 0, else g (a NaN output passes the gradient on)
TS_FX_UNARY(relu, tessera::relu(x), tessera::where(tessera::relu(x) <= T(0), T(0), g))
TS_FX_UNARY(gelu, tessera::gelu(x), g * tessera::gelu_grad(x))
TS_FX_UNARY(square, x * x, g * T(2) * x)
TS_FX_UNARY(abs, tessera::abs(x), tessera::where(x > T(0), g, tessera::where(x < T(0), -g, T(0))))
#undef TS_FX_UNARY

template <class Op, class T, class A>
struct unary {
  A a;
  static constexpr int count = A::count;
  template <bool Flat>
  auto fwd(index_t n) const { return Op::template value<T>(a.template fwd<Flat>(n)); }
  template <bool Flat, class Adj>
  auto grads(const Adj& g, index_t n) const { return a.template grads<Flat>(Op::template grad<T>(a.template fwd<Flat>(n), g), n); }
  template <class F>
  void leaves(F&& f) const { a.leaves(f); }
  static std::string str(int& k) { return std::string(Op::name) + "(" + A::str(k) + ")"; }
};

}  // namespace fx
}  // namespace detail

/// An elementwise expression of Vars, not evaluated yet (see the top of this file). It is a Var: every operation
/// that takes a Var takes it, evaluating it on first use.
template <class T, int R, class P, class Tree>
class expr : public Var<T, R, P> {
  using base = Var<T, R, P>;

 public:
  using tree_type = Tree;
  explicit expr(Tree t) : base(base::lazy, &materialize), tree_(std::move(t)) {
    dims_ = tree_.template fwd<false>(0).expr_dims();  // broadcasting checked here: a misfit throws at the operator
    if (detect_anomaly_enabled()) this->ensure();      // anomaly mode checks every operation as it runs
  }
  expr(const expr& o) : base(base::lazy, &materialize), tree_(o.tree_), dims_(o.dims_) { this->n_ = o.n_; }
  expr& operator=(const expr&) = delete;

  const Tree& tree() const { return tree_; }
  const dims_t<R>& dims() const { return dims_; }
  index_t size() const { return product(dims_); }

 private:
  static void materialize(const base* self) {
    const expr& e = static_cast<const expr&>(*self);
    typename base::tensor out(e.dims_);
    out = e.tree_.template fwd<false>(0);  // one fused pass
    std::vector<std::shared_ptr<ad::detail::node_base>> inputs;
    bool any = false;
    e.tree_.leaves([&](const auto& v) {
      any = any || v.requires_grad();
      inputs.push_back(v.ptr());
    });
    auto made = base::make_from(std::move(out), fused_backward{e.tree_}, inputs, any);
    e.n_ = made.ptr();
  }

  /// The recorded backward; anomaly messages name the expression by its formula (x0, x1, ...: its inputs in order).
  struct fused_backward {
    Tree tree;
    void operator()(const typename base::tensor& g) const { run_backward(tree, g); }
    static std::string op_name() {
      int k = 0;
      return Tree::str(k);
    }
  };

  /// The gradients of every leaf from g (this node's gradient, complete), in one pass where the backend offers it.
  static void run_backward(const Tree& tree, const typename base::tensor& g) {
    const dims_t<R>& d = g.dims();
    const index_t n = g.size();
    constexpr int K = Tree::count;
    std::array<const void*, K> nodes{};
    std::array<bool, K> same{}, want{};
    bool all_same = true;
    {
      int k = 0;
      tree.leaves([&](const auto& v) {
        nodes[k] = v.ptr().get();
        want[k] = v.requires_grad();
        if constexpr (std::remove_cvref_t<decltype(v)>::rank == R) same[k] = v.dims() == d;
        all_same = all_same && (same[k] || !want[k]);
        ++k;
      });
    }
    if constexpr (requires { requires backend<P>::multi_output; }) {
      if (all_same && n > 0) {
        auto flat_g = tessera::reshape<dyn_shape_t<1>>(g, dims_t<1>{n});
        auto grads = tree.template grads<true>(flat_g, n);
        // each distinct leaf that wants a gradient is one destination; its occurrences are summed into it
        std::array<int, K> dest_of{};
        std::array<T*, K> dests{};
        std::array<bool, K> accumulate{};
        int nd = 0;
        int k = 0;
        tree.leaves([&](const auto& v) {
          dest_of[k] = -1;
          if (want[k]) {
            for (int j = 0; j < k; ++j)
              if (want[j] && nodes[j] == nodes[k]) dest_of[k] = dest_of[j];
            if (dest_of[k] < 0) {
              bool acc;
              dests[nd] = fresh_or_grad_data(v, acc);
              accumulate[nd] = acc;
              dest_of[k] = nd++;
            }
          }
          ++k;
        });
        const auto evs = std::apply([&](const auto&... e) { return std::make_tuple(e.template evaluator<1>(dims_t<1>{n})...); }, grads);
        constexpr std::size_t lane = max_lane_of(static_cast<decltype(grads)*>(nullptr));
        backend<P>::template elementwise_multi<T, lane, K>(n, evs, dest_of.data(), dests.data(), accumulate.data(), nd);
        return;
      }
    }
    // one pass per leaf occurrence (broadcast leaves: summed down to their shape)
    auto grads = tree.template grads<false>(g.cview(), n);
    int k = 0;
    tree.leaves([&](const auto& v) {
      const int at = k++;
      if (!want[at]) return;
      visit_at(grads, at, [&](const auto& ge) { detail::accumulate(v, ge); });
    });
  }

  template <class... E>
  static constexpr std::size_t max_lane_of(std::tuple<E...>*) {
    return std::max({sizeof(T), E::max_lane_size...});
  }
  template <class V>
  static T* fresh_or_grad_data(const V& v, bool& acc) {
    auto& nd = v.node();
    acc = nd.has_grad;
    if (!nd.has_grad) {
      nd.grad = typename V::tensor(v.dims());
      nd.has_grad = true;
    }
    return nd.grad.data();
  }
  template <class Tup, class F, std::size_t... I>
  static void visit_at_impl(const Tup& t, int at, F&& f, std::index_sequence<I...>) {
    ((int(I) == at ? (void)f(std::get<I>(t)) : (void)0), ...);
  }
  template <class Tup, class F>
  static void visit_at(const Tup& t, int at, F&& f) {
    visit_at_impl(t, at, f, std::make_index_sequence<std::tuple_size_v<Tup>>{});
  }

  Tree tree_;
  dims_t<R> dims_{};
};

namespace detail {
template <class V>
concept var_like = requires { typename V::value_type; typename V::policy; V::rank; } &&
                   std::is_base_of_v<Var<typename V::value_type, V::rank, typename V::policy>, V>;
template <class V>
inline constexpr bool is_var_like = var_like<V>;
template <class V>
concept is_expr = requires { typename V::tree_type; } && var_like<V>;

template <class V>
auto tree_of(const V& v) {
  if constexpr (is_expr<V>) return v.tree();
  else return fx::leaf<typename V::value_type, V::rank, typename V::policy>{v};
}
template <class T, int R, class P, class Tree>
auto make_expr(Tree t) {
  return expr<T, R, P, Tree>(std::move(t));
}
}  // namespace detail

template <class V>
concept VarLike = detail::is_var_like<std::remove_cvref_t<V>>;

// ---- binary arithmetic (broadcasting) ----

#define TS_AD_BINARY(OP, TAG)                                                                                          \
  template <VarLike A, VarLike B>                                                                                      \
    requires std::is_same_v<typename A::value_type, typename B::value_type> &&                                         \
             std::is_same_v<typename A::policy, typename B::policy>                                                    \
  auto OP(const A& a, const B& b) {                                                                                    \
    using tree = detail::fx::binary<detail::fx::TAG, decltype(detail::tree_of(a)), decltype(detail::tree_of(b))>;     \
    return detail::make_expr<typename A::value_type, detail::max_rank<A::rank, B::rank>, typename A::policy>(          \
        tree{detail::tree_of(a), detail::tree_of(b)});                                                                 \
  }                                                                                                                    \
  template <VarLike A, class S>                                                                                        \
    requires std::is_arithmetic_v<S>                                                                                   \
  auto OP(const A& a, S s) {                                                                                           \
    using T = typename A::value_type;                                                                                  \
    using tree = detail::fx::binary<detail::fx::TAG, decltype(detail::tree_of(a)), detail::fx::constant<T>>;          \
    return detail::make_expr<T, A::rank, typename A::policy>(tree{detail::tree_of(a), {T(s)}});                      \
  }                                                                                                                    \
  template <class S, VarLike B>                                                                                        \
    requires std::is_arithmetic_v<S>                                                                                   \
  auto OP(S s, const B& b) {                                                                                           \
    using T = typename B::value_type;                                                                                  \
    using tree = detail::fx::binary<detail::fx::TAG, detail::fx::constant<T>, decltype(detail::tree_of(b))>;          \
    return detail::make_expr<T, B::rank, typename B::policy>(tree{{T(s)}, detail::tree_of(b)});                      \
  }
TS_AD_BINARY(operator+, add)
TS_AD_BINARY(operator-, sub)
TS_AD_BINARY(operator*, mul)
TS_AD_BINARY(operator/, div)
#undef TS_AD_BINARY

// ---- unary functions ----

#define TS_AD_UNARY(NAME, TAG)                                                                                         \
  template <VarLike A>                                                                                                 \
  auto NAME(const A& a) {                                                                                              \
    using T = typename A::value_type;                                                                                  \
    using tree = detail::fx::unary<detail::fx::TAG, T, decltype(detail::tree_of(a))>;                                 \
    return detail::make_expr<T, A::rank, typename A::policy>(tree{detail::tree_of(a)});                              \
  }
TS_AD_UNARY(operator-, neg)
TS_AD_UNARY(exp, exp)
TS_AD_UNARY(log, log)
TS_AD_UNARY(sqrt, sqrt)
TS_AD_UNARY(tanh, tanh)
TS_AD_UNARY(sigmoid, sigmoid)
TS_AD_UNARY(relu, relu)
TS_AD_UNARY(gelu, gelu)
TS_AD_UNARY(square, square)
TS_AD_UNARY(abs, abs)
#undef TS_AD_UNARY

/// The expression evaluated now, as a plain Var (one fused pass; one node on the tape).
template <VarLike A>
Var<typename A::value_type, A::rank, typename A::policy> eval(const A& a) {
  return a;
}

}  // namespace tessera::ad
