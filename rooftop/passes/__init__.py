"""Pass registry and the default pipeline (explicit order)."""

from __future__ import annotations

from rooftop.passes.attention_fusion import AttentionFusion
from rooftop.passes.base import ModelPass, Pass, PassContext, PassManager, PassRecord, PassResult, Validation
from rooftop.passes.cleanup import Cleanup
from rooftop.passes.conv_activation import ConvActivation
from rooftop.passes.fold_conv_bn import FoldConvBN
from rooftop.passes.gelu_fusion import GeluFusion
from rooftop.passes.nhwc_int8 import NhwcInt8
from rooftop.passes.norm_fusion import NormFusion
from rooftop.passes.pad_channels import PadChannels
from rooftop.passes.requant import Requant
from rooftop.passes.residual_sum import ResidualSum
from rooftop.passes.rotary_fusion import RotaryFusion
from rooftop.passes.shape_chains import ShapeChains
from rooftop.passes.simplify import Simplify
from rooftop.passes.u8_activations import U8Activations

REGISTRY: dict[str, type[Pass]] = {
    p.name: p
    for p in (
        Cleanup,
        Simplify,
        ShapeChains,
        NormFusion,
        GeluFusion,
        AttentionFusion,
        RotaryFusion,
        ResidualSum,
        FoldConvBN,
        ConvActivation,
        U8Activations,
        Requant,
        NhwcInt8,
        PadChannels,
    )
}

# Order matters: fold constants first so run-time-computed parameters become
# constants the pattern passes can match; residual-sum right after the norms exist, so that the
# fusions after it are timed as onnxruntime will run them (a fusion that lets onnxruntime see
# shapes otherwise lets it fuse Add + LayerNormalization into its slower kernel); clean up last.
DEFAULT_PIPELINE: list[str] = [
    "cleanup",
    "simplify",
    "shape-chains",
    "norm-fusion",
    "residual-sum",
    "gelu-fusion",
    "attention-fusion",
    "rotary-fusion",
    "fold-conv-bn",
    "conv-activation",
    "u8-activations",
    "requant",
    "nhwc-int8",
    "pad-channels",
    "cleanup",
]

__all__ = [
    "REGISTRY",
    "DEFAULT_PIPELINE",
    "ModelPass",
    "Pass",
    "PassContext",
    "PassManager",
    "PassRecord",
    "PassResult",
    "Validation",
]
