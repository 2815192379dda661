// The tessera side of tests/prune/prune_vs_torch.py: reads parameters (weights.txt: per parameter a line
// "<name> <extents...>" and a line of its values) and pruning calls (ops.txt, one a line:
//   l1 <name> <amount>                     prune::pruning::l1_unstructured
//   ln <name> <amount> <n> <dim>           ln_structured (n: a number or inf)
//   global <name>,<name>,... <amount>      global_unstructured
// an amount with a '.' is a fraction, else a count), runs them on a model holding those parameters and writes every
// mask to masks.txt in the format of weights.txt. Arguments: the folder holding the files.
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <tessera/prune/mask.hpp>

namespace ts = tessera;
namespace ad = tessera::ad;
namespace prune = tessera::prune;

namespace {
/// The model: parameters of any rank held as their dims and a Var of that rank, visited in file order.
struct model {
  std::vector<std::string> names;
  std::map<std::string, ad::Var<float, 1, ts::cpu>> flat;
  std::map<std::string, ad::Var<float, 2, ts::cpu>> r2;
  std::map<std::string, ad::Var<float, 4, ts::cpu>> r4;
  template <class F>
  void for_each_parameter(F&& f) {
    for (const auto& n : names) {
      if (flat.count(n)) f(n, flat.at(n));
      if (r2.count(n)) f(n, r2.at(n));
      if (r4.count(n)) f(n, r4.at(n));
    }
  }
};
template <int R>
ad::Var<float, R, ts::cpu> make(const std::vector<ts::index_t>& d, const std::vector<float>& vals) {
  ts::dims_t<R> e;
  for (int i = 0; i < R; ++i) e[std::size_t(i)] = d[std::size_t(i)];
  ts::Tensor<float, ts::dyn_shape_t<R>, ts::cpu> t(e);
  for (std::size_t i = 0; i < vals.size(); ++i) t.data()[i] = vals[i];
  return ad::Var<float, R, ts::cpu>(std::move(t), true);
}
prune::amount parse_amount(const std::string& s) {
  if (s.find('.') != std::string::npos) return std::stod(s);
  return std::stoll(s);
}
}  // namespace

int main(int argc, char** argv) {
  const std::string dir = argc > 1 ? std::string(argv[1]) + "/" : "";
  std::ifstream w(dir + "weights.txt"), ops(dir + "ops.txt");
  if (!w || !ops) {
    std::fprintf(stderr, "prune_ops: cannot read %sweights.txt or %sops.txt\n", dir.c_str(), dir.c_str());
    return 2;
  }
  model net;
  std::string line;
  while (std::getline(w, line)) {
    std::istringstream h(line);
    std::string name;
    h >> name;
    std::vector<ts::index_t> d;
    for (ts::index_t x; h >> x;) d.push_back(x);
    std::getline(w, line);
    std::istringstream v(line);
    std::vector<float> vals;
    for (double f; v >> f;) vals.push_back(float(f));
    net.names.push_back(name);
    if (d.size() == 1) net.flat.emplace(name, make<1>(d, vals));
    else if (d.size() == 2) net.r2.emplace(name, make<2>(d, vals));
    else if (d.size() == 4) net.r4.emplace(name, make<4>(d, vals));
    else {
      std::fprintf(stderr, "prune_ops: rank %zu is not handled\n", d.size());
      return 2;
    }
  }
  prune::pruning<float> p;
  while (std::getline(ops, line)) {
    std::istringstream s(line);
    std::string op, name, amount;
    s >> op >> name >> amount;
    if (op == "l1") {
      p.l1_unstructured(net, name, parse_amount(amount));
    } else if (op == "ln") {
      std::string n;
      int dim = 0;
      s >> n >> dim;
      p.ln_structured(net, name, parse_amount(amount), n == "inf" ? INFINITY : std::stod(n), dim);
    } else if (op == "global") {
      std::vector<std::string> names;
      std::istringstream list(name);
      for (std::string n; std::getline(list, n, ',');) names.push_back(n);
      p.global_unstructured(net, names, parse_amount(amount));
    } else {
      std::fprintf(stderr, "prune_ops: unknown call %s\n", op.c_str());
      return 2;
    }
  }
  std::ofstream out(dir + "masks.txt");
  for (const auto& n : p.names()) {
    out << n;
    for (auto e : p.dims(n)) out << ' ' << e;
    out << '\n';
    for (float m : p.mask(n)) out << m << ' ';
    out << '\n';
  }
  return 0;
}
