"""The graph operations a bridged model may name, and nothing else.

A bridged model saved to `.keras` or `.h5` stores its graph operations by
name: the TensorFlow function of a tf_keras `TFOpLambda` (as a dotted symbol
such as `"math.multiply"`) in the Keras 3 direction, and a serialized Keras 3
operation (module and class) in the tf_keras direction. Loading such a file
resolves those names. Resolved without limits, a crafted file could make a
load or the first call run any TensorFlow function (`tf.io.write_file`,
`tf.load_op_library`, `tf.py_function`, ...) or any Keras object. This module
holds the explicit lists of what the bridge emits and accepts: tensor math,
array manipulation, activations, convolutions and pooling, image resizing and
the like; no file, Python-callback, library-loading, printing or control-flow
function.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from tflight._keras import keras, tf
from tflight.errors import BridgeError

__all__ = [
    "TF_OPERATIONS",
    "KERAS_OPERATION_MODULES",
    "tf_operation",
    "tf_operation_allowed",
    "check_keras_operation",
]

# TensorFlow functions (as tf_keras names them in TFOpLambda layers, relative
# to `tf.`) that the Keras 3 side of the bridge may call. tf_keras prefixes
# functions it only finds in the v1 API with "compat.v1."; those map to the
# same names below (plus the v1-only spellings in _V1_ONLY).
_NAMES = {
    "__operators__": "add eq getitem ne",
    "": """
        abs acos acosh add add_n argmax argmin argsort asin asinh atan atan2 atanh
        batch_to_space bitcast boolean_mask broadcast_to cast clip_by_norm clip_by_value
        complex concat cos cosh cumsum divide einsum ensure_shape equal exp expand_dims
        extract_volume_patches eye fill floor gather gather_nd greater greater_equal
        identity less less_equal linspace logical_and logical_not logical_or matmul
        maximum meshgrid minimum multiply negative norm not_equal one_hot ones ones_like
        pad parallel_stack pow range rank realdiv reduce_all reduce_any reduce_logsumexp
        reduce_max reduce_mean reduce_min reduce_prod reduce_sum repeat reshape reverse
        reverse_sequence roll round saturate_cast scalar_mul scatter_nd searchsorted
        sequence_mask shape shape_n sigmoid sign sin sinh size slice sort space_to_batch
        space_to_batch_nd split sqrt square squeeze stack stop_gradient strided_slice
        subtract tan tanh tensor_scatter_nd_add tensor_scatter_nd_max
        tensor_scatter_nd_min tensor_scatter_nd_sub tensor_scatter_nd_update tensordot
        tile transpose truediv truncatediv truncatemod unravel_index unstack where zeros
        zeros_like
    """,
    "math": """
        abs acos acosh add add_n angle argmax argmin asin asinh atan atan2 atanh
        bessel_i0 bessel_i0e bessel_i1 bessel_i1e betainc ceil conj cos cosh
        count_nonzero cumprod cumsum cumulative_logsumexp digamma divide divide_no_nan
        equal erf erfc erfcinv erfinv exp expm1 floor floordiv floormod greater
        greater_equal igamma igammac imag in_top_k invert_permutation is_finite is_inf
        is_nan l2_normalize lbeta less less_equal lgamma log log1p log_sigmoid
        log_softmax logical_and logical_not logical_or logical_xor maximum minimum mod
        multiply multiply_no_nan ndtri negative nextafter not_equal polygamma polyval
        pow real reciprocal reciprocal_no_nan reduce_all reduce_any
        reduce_euclidean_norm reduce_logsumexp reduce_max reduce_mean reduce_min
        reduce_prod reduce_std reduce_sum reduce_variance rint round rsqrt scalar_mul
        segment_max segment_mean segment_min segment_prod segment_sum sigmoid sign sin
        sinh softmax softplus softsign sqrt square squared_difference subtract tan tanh
        top_k truediv unsorted_segment_max unsorted_segment_mean unsorted_segment_min
        unsorted_segment_prod unsorted_segment_sqrt_n unsorted_segment_sum xdivy
        xlog1py xlogy zero_fraction zeta
    """,
    "nn": """
        atrous_conv2d atrous_conv2d_transpose avg_pool avg_pool1d avg_pool2d avg_pool3d
        batch_normalization bias_add conv1d conv1d_transpose conv2d conv2d_transpose
        conv3d conv3d_transpose conv_transpose convolution crelu depth_to_space
        depthwise_conv2d dilation2d dropout elu embedding_lookup erosion2d gelu
        l2_normalize leaky_relu local_response_normalization log_softmax lrn max_pool
        max_pool1d max_pool2d max_pool3d moments normalize_moments pool relu relu6 selu
        separable_conv2d sigmoid silu softmax softplus softsign space_to_batch
        space_to_depth swish tanh top_k zero_fraction
    """,
    "linalg": """
        adjoint band_part cross det diag diag_part einsum eye global_norm inv
        l2_normalize logdet matmul matrix_transpose matvec norm normalize pinv qr
        set_diag slogdet solve svd tensor_diag tensor_diag_part tensordot trace
    """,
    "image": """
        adjust_brightness adjust_contrast adjust_gamma central_crop convert_image_dtype
        crop_and_resize crop_to_bounding_box extract_patches flip_left_right
        flip_up_down grayscale_to_rgb hsv_to_rgb pad_to_bounding_box
        per_image_standardization resize resize_with_crop_or_pad resize_with_pad
        rgb_to_grayscale rgb_to_hsv rgb_to_yiq rgb_to_yuv rot90 sobel_edges
        total_variation transpose yiq_to_rgb yuv_to_rgb
    """,
    "signal": """
        dct fft fft2d fft3d fftshift frame hamming_window hann_window idct ifft ifft2d
        ifft3d ifftshift inverse_mdct inverse_stft irfft irfft2d irfft3d
        linear_to_mel_weight_matrix mdct mfccs_from_log_mel_spectrograms
        overlap_and_add rfft rfft2d rfft3d stft
    """,
    "bitwise": "bitwise_and bitwise_or bitwise_xor invert left_shift right_shift",
}
_V1_ONLY = frozenset({"div", "div_no_nan", "floor_div", "floordiv", "to_float", "to_int32"})

TF_OPERATIONS: frozenset[str] = frozenset(
    f"{namespace}.{name}" if namespace else name
    for namespace, names in _NAMES.items()
    for name in names.split()
)

# Modules whose Keras 3 operation classes the tf_keras side of the bridge may
# rebuild from a saved config.
KERAS_OPERATION_MODULES = frozenset(
    {
        "keras.src.ops.core",
        "keras.src.ops.image",
        "keras.src.ops.linalg",
        "keras.src.ops.math",
        "keras.src.ops.nn",
        "keras.src.ops.numpy",
    }
)
# Operations of those modules that take functions as arguments: never rebuilt.
_CALLABLE_TAKING = frozenset(
    {
        "AssociativeScan",
        "Cond",
        "CustomGradient",
        "ForiLoop",
        "Map",
        "Scan",
        "Switch",
        "VectorizedMap",
        "WhileLoop",
    }
)


def tf_operation_allowed(symbol: Any) -> bool:
    """True if `symbol` names a TensorFlow function the bridge may call."""
    if not isinstance(symbol, str):
        return False
    if symbol in TF_OPERATIONS:
        return True
    if symbol.startswith("compat.v1."):
        rest = symbol[len("compat.v1.") :]
        return rest in TF_OPERATIONS or rest in _V1_ONLY
    return False


def tf_operation(symbol: Any) -> Callable[..., Any]:
    """The TensorFlow function named `symbol` (relative to `tf.`), if allowed.

    Args:
        symbol: A dotted name as tf_keras' `TFOpLambda` records it, e.g.
            `"math.multiply"` or `"__operators__.add"`.

    Returns:
        The function.

    Raises:
        BridgeError: If `symbol` is not a string in `TF_OPERATIONS` (or its
            `compat.v1.` spelling), or does not name a function in this
            TensorFlow.
    """
    if not tf_operation_allowed(symbol):
        raise BridgeError(
            f"Refusing to rebuild graph operation tf.{symbol}: the bridge only calls the "
            "TensorFlow tensor functions it emits itself (tflight._bridge_ops.TF_OPERATIONS), "
            "so that a model file cannot make it run anything else. If this file is yours, "
            "rewrite that step with a Keras layer or keras.ops; never load files you do not trust."
        )
    fn: Any = tf
    for part in symbol.split("."):
        fn = getattr(fn, part, None)
        if fn is None:
            break
    if not callable(fn):
        raise BridgeError(
            f"Graph operation tf.{symbol} does not exist in TensorFlow {tf.__version__}; "
            "the model was saved with another version. Rebuild it with this one."
        )
    return fn


def check_keras_operation(config: Any) -> None:
    """Checks a serialized Keras 3 operation before it is deserialized.

    Only operation classes of Keras' own `keras.ops` modules (`numpy`, `nn`,
    `math`, `core`, `image`, `linalg`) pass, and none that take a function.

    Raises:
        BridgeError: Naming the module and class the config asks for.
    """
    module = config.get("module") if isinstance(config, Mapping) else None
    name = config.get("class_name") if isinstance(config, Mapping) else None
    cls = None
    if module in KERAS_OPERATION_MODULES and isinstance(name, str) and name not in _CALLABLE_TAKING:
        import importlib

        cls = getattr(importlib.import_module(module), name, None)
    ok = (
        isinstance(cls, type)
        and issubclass(cls, keras.Operation)
        and not issubclass(cls, keras.layers.Layer)
        and cls.__module__ == module
    )
    if not ok:
        shown = f"{module}.{name}" if isinstance(config, Mapping) else repr(config)[:80]
        raise BridgeError(
            f"Refusing to rebuild graph operation {shown}: the bridge only rebuilds Keras 3 "
            f"operations from {sorted(KERAS_OPERATION_MODULES)}, so that a model file cannot "
            "make it run anything else. If this file is yours, rewrite that step with a Keras "
            "layer or keras.ops; never load files you do not trust."
        )
