"""Quantization-aware training (``edgeseg qat``): api.py; graph.py runs the ONNX graph in torch, fake_quant.py
rounds, placement.py reads calibrate's layout, model.py joins them, writer.py writes with calibrate's writers.

Not named ``qat``: ``edgeseg.qat`` is the verb (a function), and a subpackage of that name would replace it on the
``edgeseg`` module as soon as it is imported.
"""
