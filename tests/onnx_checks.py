"""Small facts about ONNX files that several tests check."""
from pathlib import Path


def quantized_conv_share(path: Path) -> float:
    """The share of Conv nodes whose weight comes out of a DequantizeLinear: what makes a Q/DQ model INT8."""
    import onnx

    graph = onnx.load(str(path)).graph
    dequantized = {out for node in graph.node if node.op_type == "DequantizeLinear" for out in node.output}
    convs = [node for node in graph.node if node.op_type == "Conv"]
    return sum(node.input[1] in dequantized for node in convs) / max(len(convs), 1)
