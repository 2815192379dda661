// Where the mixed-precision mode (amp/autocast.hpp) enters the layer operations. ad::linear, ad::conv2d and
// ad::conv2d_relu_maxpool2 (autodiff/nn_ops.hpp) ask, after checking their shapes, whether an autocast scope is open
// on this thread for their element type and policy; if so they hand their arguments to the bf16 forms that scope
// registered, else they run as before.
//
// The table holds plain function pointers, set by amp::autocast's constructor and restored by its destructor, so the
// bf16 operations are instantiated only in programs that include amp/autocast.hpp: a program without it pays one
// thread-local load per layer call and compiles nothing more. Only float operations are ever cast (PyTorch's
// autocast casts float32 products to bfloat16; double stays double), so for other element types the lookup is
// compiled out.
#pragma once
#include <type_traits>

#include "tessera/autodiff/var.hpp"
#include "tessera/expr/conv.hpp"
#include "tessera/kernels/backend.hpp"

namespace tessera::ad::detail {

/// The bf16 forms of the layer products for element type T on policy P (any entry may be null: that operation then
/// runs in T).
template <class T, class P>
struct autocast_ops {
  Var<T, 2, P> (*linear)(const Var<T, 2, P>& x, const Var<T, 2, P>& w, const Var<T, 1, P>& b, activation act) = nullptr;
  Var<T, 4, P> (*conv2d)(const Var<T, 4, P>& x, const Var<T, 4, P>& w, const Var<T, 1, P>& b, const conv2d_options& opt,
                         activation act) = nullptr;
  Var<T, 4, P> (*conv2d_relu_maxpool2)(const Var<T, 4, P>& x, const Var<T, 4, P>& w, const Var<T, 1, P>& b,
                                       const conv2d_options& opt) = nullptr;
};

/// The table of the innermost open autocast scope of this thread (null: none open, or autocast disabled in it).
template <class T, class P>
inline thread_local const autocast_ops<T, P>* autocast_active = nullptr;

/// autocast_active for float, null for every other element type (without touching a thread-local).
template <class T, class P>
inline const autocast_ops<T, P>* autocast_for() {
  if constexpr (std::is_same_v<T, float>) return autocast_active<T, P>;
  else return nullptr;
}

}  // namespace tessera::ad::detail
