"""ONNX Runtime's C++ kernels as a baseline: one-node ONNX models built with onnx's helper API.

Each function returns a callable that runs the kernel on the given tensors
(converted to numpy once, outside the timed call) and returns a torch.Tensor.
The session runs on ``threads`` intra-op threads, as torch does in the benchmarks.
"""
import onnxruntime
import torch
from onnx import TensorProto, helper

ONNX_TYPES = {torch.float32: TensorProto.FLOAT, torch.float64: TensorProto.DOUBLE,
              torch.int64: TensorProto.INT64}


def _runner(node, feeds: dict, opset: int, threads: int):
    inputs = [helper.make_tensor_value_info(name, ONNX_TYPES[t.dtype], list(t.shape))
              for name, t in feeds.items()]
    first = next(iter(feeds.values()))
    output = helper.make_tensor_value_info(node.output[0], ONNX_TYPES[first.dtype], None)
    model = helper.make_model(helper.make_graph([node], node.op_type, inputs, [output]),
                              opset_imports=[helper.make_opsetid("", opset)])
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = onnxruntime.InferenceSession(model.SerializeToString(), options,
                                           providers=["CPUExecutionProvider"])
    arrays = {name: t.detach().contiguous().numpy() for name, t in feeds.items()}
    return lambda: torch.from_numpy(session.run(None, arrays)[0])


def roi_align(input, rois, output_size, spatial_scale, sampling_ratio, aligned, threads):
    """ONNX ``RoiAlign`` (opset 16, mode avg) on ``rois`` ``(K, 5)`` as torchvision's.

    ``coordinate_transformation_mode`` ``half_pixel`` shifts the box by -0.5 pixel
    (torchvision's ``aligned=True``); ``output_half_pixel`` does not and clamps the
    RoI to at least 1 x 1 (``aligned=False``, torchvision's default). ONNX's
    adaptive sampling is ``sampling_ratio=0``.
    """
    PH, PW = output_size
    node = helper.make_node(
        "RoiAlign", ["X", "rois", "batch_indices"], ["Y"], mode="avg",
        output_height=PH, output_width=PW, sampling_ratio=max(sampling_ratio, 0),
        spatial_scale=spatial_scale,
        coordinate_transformation_mode="half_pixel" if aligned else "output_half_pixel")
    return _runner(node, {"X": input, "rois": rois[:, 1:], "batch_indices": rois[:, 0].long()},
                   16, threads)


def deform_conv2d(input, offset, weight, bias, padding, mask, threads):
    """ONNX ``DeformConv`` (opset 19), torchvision's offset and mask layout; stride and
    dilation 1, weight groups and offset groups read from the shapes as torchvision does."""
    KH, KW = weight.shape[2:]
    node = helper.make_node(
        "DeformConv", ["X", "W", "offset", "B", "mask"], ["Y"], kernel_shape=[KH, KW],
        pads=[padding] * 4, strides=[1, 1], dilations=[1, 1],
        group=input.shape[1] // weight.shape[1],
        offset_group=offset.shape[1] // (2 * KH * KW))
    return _runner(node, {"X": input, "W": weight, "offset": offset, "B": bias, "mask": mask},
                   19, threads)
