"""Time the reference greedy NMS against ONNX Runtime's C++ kernel and the loop port.

    PYTHONPATH=. python bench/nms.py            # 1,000 to 20,000 clustered boxes, float32
    PYTHONPATH=. python bench/nms.py --quick    # 300 and 600 boxes, 1 repeat (smoke test)

torchvision is not installed. Two baselines: ONNX Runtime's ``NonMaxSuppression``
(opset 11, one class, corner boxes, no score threshold; a box is suppressed when
its IoU with a kept one is above the threshold, as in torchvision), and the loop
port of torchvision's CPU kernel in autograder/oracles/nms_loops.py (one box pair
at a time in Python; run up to ``--loop-max`` boxes only, since it takes
seconds from a few thousand). The boxes are a detector's raw output: ``n / 20``
objects at random in a 1000 x 1000 image, sides 20 to 100 pixels, each seen by
about 20 boxes jittered by 10 % of its size, scores uniform in (0, 1).

Each row times one box count: ``ref_ms`` the reference, ``other_ms`` the
baseline, ``ratio`` reference / other from this one run (< 1: the reference is
faster), each the median of ``--repeats`` runs after ``--warmup`` untimed ones,
the two sides timed one after the other (ONNX Runtime's idle threads spin for a
while after a run and slow a torch call right after it). ``differs`` counts the
positions where the two kept-index lists disagree (0: the same boxes in the same
order). Both sides run on ``--threads`` threads (NMS is sequential: ONNX
Runtime's kernel uses one). The header shows the load average, since other
processes on the machine distort the timings.

The issue's goal, within 2x of ONNX Runtime at 4,000 boxes, is not met: the
reference runs one Python iteration of about 25 tensor operations per kept box
(a few hundred kept boxes, each operation some microseconds of dispatch), where
ONNX Runtime's C++ loop spends about a nanosecond per box pair.
"""
import argparse
import os
import sys
import time

import numpy as np
import onnxruntime
import torch
from onnx import TensorProto, helper

from autograder.oracles.nms_loops import nl_nms
from bench.timing import add_malloc_option, median_times, set_malloc
from solutions import nms as R


def clustered_boxes(n, generator):
    """``n`` boxes around ``n / 20`` objects in a 1000 x 1000 image, and their scores."""
    objects = max(n // 20, 1)
    centre = torch.rand(objects, 2, generator=generator) * 1000
    size = 20 + torch.rand(objects, 2, generator=generator) * 80
    k = torch.randint(0, objects, (n,), generator=generator)
    c = centre[k] + torch.randn(n, 2, generator=generator) * size[k] * 0.1
    s = size[k] * (1 + 0.1 * torch.randn(n, 2, generator=generator)).clamp(min=0.3)
    return torch.cat([c - s / 2, c + s / 2], 1), torch.rand(n, generator=generator)


def ort_nms(boxes, scores, iou_threshold, threads):
    """ONNX Runtime's ``NonMaxSuppression`` on one image and class: a callable returning the
    kept indices (feeds converted to numpy once, outside the timed call)."""
    n = len(boxes)
    node = helper.make_node("NonMaxSuppression", ["boxes", "scores", "max_output", "iou", "score"],
                            ["selected"], center_point_box=0)
    inputs = [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, n, 4]),
              helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 1, n]),
              helper.make_tensor_value_info("max_output", TensorProto.INT64, [1]),
              helper.make_tensor_value_info("iou", TensorProto.FLOAT, [1]),
              helper.make_tensor_value_info("score", TensorProto.FLOAT, [1])]
    output = helper.make_tensor_value_info("selected", TensorProto.INT64, None)
    model = helper.make_model(helper.make_graph([node], "NonMaxSuppression", inputs, [output]),
                              opset_imports=[helper.make_opsetid("", 11)])
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = onnxruntime.InferenceSession(model.SerializeToString(), options,
                                           providers=["CPUExecutionProvider"])
    feeds = {"boxes": boxes[None].numpy(), "scores": scores[None, None].numpy(),
             "max_output": np.array([n], np.int64), "iou": np.array([iou_threshold], np.float32),
             "score": np.array([-np.inf], np.float32)}
    return lambda: torch.from_numpy(session.run(None, feeds)[0][:, 2].copy())


def differs(a, b):
    """Positions where two kept-index lists disagree (a length difference counts too)."""
    a, b = a.tolist(), b.tolist()
    return sum(x != y for x, y in zip(a, b)) + abs(len(a) - len(b))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="300 and 600 boxes, 1 repeat: a smoke test")
    p.add_argument("--boxes", type=int, nargs="+", default=[1000, 2000, 4000, 8000, 20000])
    p.add_argument("--iou-threshold", type=float, default=0.5)
    p.add_argument("--loop-max", type=int, default=4000,
                   help="largest box count given to the loop port (it takes seconds from a few thousand)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    add_malloc_option(p)
    args = p.parse_args(argv)
    malloc = set_malloc(args)
    if args.quick:
        args.boxes, args.repeats, args.warmup = [300, 600], 1, 1

    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    t = args.iou_threshold
    print(f"torch {torch.__version__}, ONNX Runtime {onnxruntime.__version__}, "
          f"{torch.get_num_threads()} thread(s), float32, iou_threshold {t}, median of "
          f"{args.repeats} after {args.warmup} warm-up; load average {os.getloadavg()[0]:.2f}; {malloc}")
    header = f"{'row':<28} {'pass':<8} {'ref_ms':>10} {'other_ms':>10} {'ratio':>8}  differs"
    print(header)
    print("-" * len(header))
    t_start = time.perf_counter()

    def row(name, t_ref, t_other, diff):
        print(f"{name:<28} {'fwd':<8} {t_ref * 1e3:>10.3f} {t_other * 1e3:>10.3f} "
              f"{t_ref / t_other:>8.3g}  {diff}", flush=True)

    for n in args.boxes:
        boxes, scores = clustered_boxes(n, g)
        ref = lambda: R.nms(boxes, scores, t)  # noqa: E731
        kept = ref()
        kernel = ort_nms(boxes, scores, t, args.threads)
        (t_ref,) = median_times([ref], args.warmup, args.repeats)
        (t_ort,) = median_times([kernel], args.warmup, args.repeats)
        row(f"nms_{n}_vs_ort", t_ref, t_ort, differs(kept, kernel()))
        if n <= args.loop_max:
            loop = lambda: nl_nms(boxes, scores, t)  # noqa: E731
            (t_loop,) = median_times([loop], 0, 1 if n > 1000 else args.repeats)
            row(f"nms_{n}_vs_loop", t_ref, t_loop, differs(kept, loop()))
        print(f"  {n} boxes: {len(kept)} kept", flush=True)
    print(f"total {time.perf_counter() - t_start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
