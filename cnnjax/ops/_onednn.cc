// Channels-last convolutions on CPU by oneDNN, as one XLA FFI handler: the forward
// convolution and its two gradients, the bilinear maps of cnnjax/ops/_onednn.py.
//
// kind 0 (forward):          a = x  (N, *S, C_in),  b = w  (*K, C_in/G, C_out), out = y
// kind 1 (data gradient):    a = dy (N, *S', C_out), b = w,                      out = dx
// kind 2 (weights gradient): a = x,                  b = dy,                     out = dw
//
// Buffers keep cnnjax's layouts (channels last, kernels (*K, I/G, O)): oneDNN reads them
// through strided memory descriptors, and only the small weights are reordered into the
// blocked layout the primitive chose. A primitive is built once per call shape and kept.
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <tuple>

#include "dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

using Dims = dnnl::memory::dims;

enum Kind : int64_t { kForward = 0, kData = 1, kWeights = 2 };

dnnl::engine& Engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

// (N, *S, C) in memory as oneDNN's logical (N, C, *S).
dnnl::memory::desc ActivationDesc(const Dims& shape) {
  const size_t n = shape.size() - 2;
  Dims dims = {shape[0], shape[n + 1]};
  Dims strides(n + 2);
  int64_t step = shape[n + 1];
  strides[1] = 1;
  for (size_t i = n; i >= 1; --i) {
    strides[i + 1] = step;
    step *= shape[i];
  }
  strides[0] = step;
  dims.insert(dims.end(), shape.begin() + 1, shape.end() - 1);
  return dnnl::memory::desc(dims, dnnl::memory::data_type::f32, strides);
}

// (*K, I/G, O) in memory as oneDNN's logical (O, I, *K), or (G, O/G, I/G, *K) for groups.
dnnl::memory::desc WeightsDesc(const Dims& shape, int64_t groups) {
  const size_t n = shape.size() - 2;
  const int64_t in = shape[n], out = shape[n + 1];
  Dims dims = groups > 1 ? Dims{groups, out / groups, in} : Dims{out, in};
  Dims strides = groups > 1 ? Dims{out / groups, 1, out} : Dims{1, out};
  Dims kernel_strides(n);
  int64_t step = in * out;
  for (size_t i = n; i >= 1; --i) {
    kernel_strides[i - 1] = step;
    step *= shape[i - 1];
  }
  dims.insert(dims.end(), shape.begin(), shape.end() - 2);
  strides.insert(strides.end(), kernel_strides.begin(), kernel_strides.end());
  return dnnl::memory::desc(dims, dnnl::memory::data_type::f32, strides);
}

struct Key {
  int64_t kind, groups;
  Dims x, w, y, stride, low, high, dilation;
  bool operator<(const Key& o) const {
    return std::tie(kind, groups, x, w, y, stride, low, high, dilation) <
           std::tie(o.kind, o.groups, o.x, o.w, o.y, o.stride, o.low, o.high, o.dilation);
  }
};

// One call shape's primitive, the buffers' own layouts, the weights layout it uses, and
// its scratchpad (calls are serialised, so one buffer per primitive is enough).
struct Plan {
  dnnl::primitive primitive;
  dnnl::memory::desc x, w, y, primitive_w;
  dnnl::memory scratchpad;
};

std::shared_ptr<const Plan> MakePlan(const Key& k) {
  auto& engine = Engine();
  auto plan = std::make_shared<Plan>();
  plan->x = ActivationDesc(k.x);
  plan->y = ActivationDesc(k.y);
  plan->w = WeightsDesc(k.w, k.groups);
  auto any_w = dnnl::memory::desc(plan->w.get_dims(), dnnl::memory::data_type::f32,
                                  dnnl::memory::format_tag::any);
  Dims gaps = k.dilation;  // oneDNN counts the skipped samples between taps
  for (auto& d : gaps) d -= 1;
  auto algorithm = dnnl::algorithm::convolution_direct;
  // Scratch memory is the plan's own, not the library's global buffer.
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  dnnl::convolution_forward::primitive_desc forward(
      engine, dnnl::prop_kind::forward_training, algorithm, plan->x, any_w, plan->y, k.stride,
      gaps, k.low, k.high, attr);
  dnnl::memory::desc scratchpad;
  if (k.kind == kForward) {
    plan->primitive = dnnl::convolution_forward(forward);
    plan->primitive_w = forward.weights_desc();
    scratchpad = forward.scratchpad_desc();
  } else if (k.kind == kData) {
    dnnl::convolution_backward_data::primitive_desc data(
        engine, algorithm, plan->x, any_w, plan->y, k.stride, gaps, k.low, k.high, forward, attr);
    plan->primitive = dnnl::convolution_backward_data(data);
    plan->primitive_w = data.weights_desc();
    scratchpad = data.scratchpad_desc();
  } else {
    dnnl::convolution_backward_weights::primitive_desc weights(
        engine, algorithm, plan->x, any_w, plan->y, k.stride, gaps, k.low, k.high, forward, attr);
    plan->primitive = dnnl::convolution_backward_weights(weights);
    plan->primitive_w = weights.diff_weights_desc();
    scratchpad = weights.scratchpad_desc();
  }
  plan->scratchpad = dnnl::memory(scratchpad, engine);
  return plan;
}

std::shared_ptr<const Plan> GetPlan(const Key& k) {
  static std::mutex mutex;
  static std::map<Key, std::shared_ptr<const Plan>> plans;
  std::lock_guard<std::mutex> lock(mutex);
  auto it = plans.find(k);
  if (it == plans.end()) it = plans.emplace(k, MakePlan(k)).first;
  return it->second;
}

Dims ToDims(ffi::Span<const int64_t> s) { return Dims(s.begin(), s.end()); }

ffi::Error Convolve(ffi::Buffer<ffi::F32> a, ffi::Buffer<ffi::F32> b,
                    ffi::ResultBuffer<ffi::F32> out, int64_t kind, int64_t groups,
                    ffi::Span<const int64_t> stride, ffi::Span<const int64_t> low,
                    ffi::Span<const int64_t> high, ffi::Span<const int64_t> dilation) {
  if (kind < kForward || kind > kWeights) {
    return ffi::Error::InvalidArgument("kind must be 0, 1 or 2");
  }
  Key k{kind, groups, {}, {}, {}, ToDims(stride), ToDims(low), ToDims(high), ToDims(dilation)};
  Dims da = ToDims(a.dimensions()), db = ToDims(b.dimensions());
  Dims dout = ToDims(out->dimensions());
  if (kind == kForward) {
    k.x = da, k.w = db, k.y = dout;
  } else if (kind == kData) {
    k.y = da, k.w = db, k.x = dout;
  } else {
    k.x = da, k.y = db, k.w = dout;
  }
  // One convolution at a time: XLA may run independent ones on several of its threads, and
  // each would start an OpenMP team of its own on the same cores, whose spinning barriers
  // then wait on each other.
  static std::mutex running;
  std::lock_guard<std::mutex> lock(running);
  try {
    auto plan = GetPlan(k);
    auto& engine = Engine();
    dnnl::stream stream(engine);
    float* w_data = kind == kWeights ? out->typed_data() : b.typed_data();
    dnnl::memory w(plan->w, engine, w_data);
    dnnl::memory primitive_w = plan->primitive_w == plan->w ? w : dnnl::memory(plan->primitive_w, engine);
    if (kind == kWeights) {
      dnnl::memory x(plan->x, engine, a.typed_data()), dy(plan->y, engine, b.typed_data());
      plan->primitive.execute(stream, {{DNNL_ARG_SRC, x},
                                       {DNNL_ARG_DIFF_DST, dy},
                                       {DNNL_ARG_DIFF_WEIGHTS, primitive_w},
                                       {DNNL_ARG_SCRATCHPAD, plan->scratchpad}});
      if (primitive_w != w) dnnl::reorder(primitive_w, w).execute(stream, primitive_w, w);
    } else {
      if (primitive_w != w) dnnl::reorder(w, primitive_w).execute(stream, w, primitive_w);
      if (kind == kForward) {
        dnnl::memory x(plan->x, engine, a.typed_data()), y(plan->y, engine, out->typed_data());
        plan->primitive.execute(
            stream, {{DNNL_ARG_SRC, x},
                     {DNNL_ARG_WEIGHTS, primitive_w},
                     {DNNL_ARG_DST, y},
                     {DNNL_ARG_SCRATCHPAD, plan->scratchpad}});
      } else {
        dnnl::memory dy(plan->y, engine, a.typed_data()), dx(plan->x, engine, out->typed_data());
        plan->primitive.execute(stream, {{DNNL_ARG_DIFF_DST, dy},
                                         {DNNL_ARG_WEIGHTS, primitive_w},
                                         {DNNL_ARG_DIFF_SRC, dx},
                                         {DNNL_ARG_SCRATCHPAD, plan->scratchpad}});
      }
    }
    stream.wait();
  } catch (const dnnl::error& e) {
    return ffi::Error::Internal(std::string("oneDNN convolution: ") + e.what());
  }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(CnnjaxOnednnConv, Convolve,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("kind")
                                  .Attr<int64_t>("groups")
                                  .Attr<ffi::Span<const int64_t>>("stride")
                                  .Attr<ffi::Span<const int64_t>>("low")
                                  .Attr<ffi::Span<const int64_t>>("high")
                                  .Attr<ffi::Span<const int64_t>>("dilation"));
