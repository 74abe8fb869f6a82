"""Tests for elax.models: CIFAR ResNet architecture (counts, names, shapes), registry errors, initialisation."""

import functools
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from elax.models import get_model, model_name

SHAPE = (8, 8, 3)
DEPTH_TO_BLOCKS = {8: 1, 14: 2, 20: 3, 32: 5, 44: 7, 56: 9, 110: 18}


def abstract_variables(model, shape=SHAPE):
    """Shapes/dtypes of model.init without running (or compiling) it."""
    return jax.eval_shape(lambda k: model.init(k, jnp.zeros((1, *shape)), train=False), jax.random.key(0))


def num_params(tree) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def expected_num_params(n: int, width: int, classes: int = 10) -> int:
    """Parameter count of CIFAR ResNet-(6n+2), written out from the architecture (ELTH.md section 3)."""
    conv = lambda k, cin, cout: k * k * cin * cout  # no bias
    bn = lambda c: 2 * c                             # scale + bias
    total = conv(3, 3, width) + bn(width)            # stem
    for s in range(3):
        c = width * 2**s
        cin = width if s == 0 else c // 2
        # block 0: conv3x3 (cin->c) + BN, conv3x3 (c->c) + BN; option-B 1x1 conv + BN shortcut when cin != c.
        total += conv(3, cin, c) + bn(c) + conv(3, c, c) + bn(c)
        if cin != c:
            total += conv(1, cin, c) + bn(c)
        total += (n - 1) * (2 * conv(3, c, c) + 2 * bn(c))
    return total + 4 * width * classes + classes     # dense head with bias


def test_expected_formula_matches_published_resnet20():
    # ResNet-20 with option-B shortcuts: the well known 0.27M.
    assert expected_num_params(3, 16) == 272_474


@pytest.mark.parametrize("name,n,width", [("cifar_resnet_20", 3, 16), ("cifar_resnet_56", 9, 16),
                                          ("cifar_resnet_20_32", 3, 32), ("cifar_resnet_8_4", 1, 4)])
def test_parameter_counts(name, n, width):
    variables = abstract_variables(get_model(name))
    assert num_params(variables["params"]) == expected_num_params(n, width)
    # batch_stats: mean + var for every BN channel (stem, 2 per block, 2 shortcut BNs).
    bn_channels = width + sum(2 * n * width * 2**s for s in range(3)) + 2 * width + 4 * width
    assert num_params(variables["batch_stats"]) == 2 * bn_channels


def test_resnet20_count_literal():
    assert num_params(abstract_variables(get_model("cifar_resnet_20"))["params"]) == 272_474
    assert num_params(abstract_variables(get_model("cifar_resnet_56"))["params"]) == expected_num_params(9, 16)


def test_unit_names_and_shortcuts_resnet20():
    variables = abstract_variables(get_model("cifar_resnet_20"))
    params, stats = variables["params"], variables["batch_stats"]
    blocks = {f"stage{s}_block{b}" for s in (1, 2, 3) for b in range(3)}
    assert set(params) == {"stem_conv", "stem_bn", "head"} | blocks
    assert set(stats) == {"stem_bn"} | blocks
    plain = {"conv1", "bn1", "conv2", "bn2"}
    for block in blocks:
        expected = plain | ({"shortcut_conv", "shortcut_bn"} if block in ("stage2_block0", "stage3_block0") else set())
        assert set(params[block]) == expected, block
        assert set(stats[block]) == {k for k in expected if "bn" in k}, block
    assert set(params["stem_conv"]) == {"kernel"}          # no bias
    assert set(params["head"]) == {"kernel", "bias"}
    assert params["stage2_block0"]["shortcut_conv"]["kernel"].shape == (1, 1, 16, 32)
    assert params["stage3_block0"]["shortcut_conv"]["kernel"].shape == (1, 1, 32, 64)


@pytest.mark.parametrize("depth", sorted(DEPTH_TO_BLOCKS))
def test_block_counts(depth):
    model = get_model(f"cifar_resnet_{depth}")
    n = DEPTH_TO_BLOCKS[depth]
    assert model.stage_sizes == (n, n, n)
    assert model.family == "cifar_resnet"
    params = abstract_variables(model)["params"]
    for s in (1, 2, 3):
        assert sorted(k for k in params if k.startswith(f"stage{s}_")) == sorted(
            f"stage{s}_block{b}" for b in range(n))
    shortcuts = sorted(k for k in params if "shortcut_conv" in params.get(k, {}))
    assert shortcuts == ["stage2_block0", "stage3_block0"]
    assert model_name(model) == f"cifar_resnet_{depth}"


def test_width_variant_channels():
    model = get_model("cifar_resnet_20_32")
    assert model.width == 32 and model.stage_sizes == (3, 3, 3)
    p = abstract_variables(model)["params"]
    assert p["stem_conv"]["kernel"].shape == (3, 3, 3, 32)
    assert p["stem_bn"]["scale"].shape == (32,)
    for b in range(3):
        assert p[f"stage1_block{b}"]["conv1"]["kernel"].shape == (3, 3, 32, 32)
        assert p[f"stage1_block{b}"]["conv2"]["kernel"].shape == (3, 3, 32, 32)
    assert p["stage2_block0"]["conv1"]["kernel"].shape == (3, 3, 32, 64)
    assert p["stage2_block1"]["conv1"]["kernel"].shape == (3, 3, 64, 64)
    assert p["stage3_block0"]["conv1"]["kernel"].shape == (3, 3, 64, 128)
    assert p["stage3_block0"]["shortcut_conv"]["kernel"].shape == (1, 1, 64, 128)
    assert p["stage3_block2"]["conv2"]["kernel"].shape == (3, 3, 128, 128)
    assert p["stage3_block2"]["bn2"]["scale"].shape == (128,)
    assert p["head"]["kernel"].shape == (128, 10)
    assert model_name(model) == "cifar_resnet_20_32"
    assert model_name(get_model("cifar_resnet_20_16")) == "cifar_resnet_20"


def test_num_classes_and_feature_map_shapes():
    model = get_model("cifar_resnet_14_4", num_classes=7)
    x = jnp.zeros((2, *SHAPE))
    variables = abstract_variables(model)
    assert variables["params"]["head"]["kernel"].shape == (16, 7)
    out, state = jax.eval_shape(
        lambda v: model.apply(v, x, capture_intermediates=lambda mdl, name: name == "__call__",
                              mutable=["intermediates"]), variables)
    assert out.shape == (2, 7) and out.dtype == jnp.float32
    inter = state["intermediates"]
    shape_of = lambda unit: inter[unit]["__call__"][0].shape
    assert shape_of("stage1_block0") == (2, 8, 8, 4)
    assert shape_of("stage1_block1") == (2, 8, 8, 4)
    assert shape_of("stage2_block0") == (2, 4, 4, 8)     # stride 2
    assert shape_of("stage2_block1") == (2, 4, 4, 8)
    assert shape_of("stage3_block0") == (2, 2, 2, 16)    # stride 2
    assert shape_of("stage3_block1") == (2, 2, 2, 16)


@pytest.mark.parametrize("name", ["cifar_resnet_21", "cifar_resnet_7", "cifar_resnet_2", "cifar_resnet_1208"])
def test_invalid_depth_lists_valid_depths(name):
    with pytest.raises(ValueError) as info:
        get_model(name)
    message = str(info.value)
    assert "6n+2" in message
    assert "8, 14, 20, 26, 32" in message and "1 <= n <= 200" in message
    assert name.rsplit("_", 1)[1] in message
    assert get_model("cifar_resnet_1202").stage_sizes == (200, 200, 200)   # the deepest of He et al. (2016)


@pytest.mark.parametrize("name", ["resnet_20", "cifar_resnet", "cifar_resnet_20_x", "mlp_99x", ""])
def test_unknown_name_lists_valid_names(name):
    with pytest.raises(ValueError) as info:
        get_model(name)
    message = str(info.value)
    assert repr(name) in message
    assert "Valid names" in message and "cifar_resnet_{depth}" in message and "cifar_resnet_20" in message


def test_output_shape_and_init_statistics(resnet8_variables):
    params, stats = resnet8_variables["params"], resnet8_variables["batch_stats"]
    flat = {"/".join(k.key for k in path): np.asarray(x)
            for path, x in jax.tree_util.tree_flatten_with_path(params)[0]}
    scales = np.concatenate([v for k, v in flat.items() if k.endswith("scale")])
    assert scales.size == 4 + 8 + 3 * 8 + 3 * 16
    assert scales.min() >= 0.0 and scales.max() < 1.0
    assert 0.35 < scales.mean() < 0.65 and 0.2 < scales.std() < 0.37   # U[0, 1): mean 0.5, std 0.289
    for k, v in flat.items():
        if k.endswith("bias"):
            np.testing.assert_array_equal(v, 0.0, err_msg=k)
        assert v.dtype == np.float32, k
    for path, x in jax.tree_util.tree_flatten_with_path(stats)[0]:
        expected = 0.0 if path[-1].key == "mean" else 1.0
        np.testing.assert_array_equal(x, expected)

    # Kaiming normal, fan_in, untruncated: std sqrt(2 / fan_in), zero mean.
    kernels = {k: v for k, v in flat.items() if k.endswith("kernel")}
    assert len(kernels) == 10
    z = []
    for k, v in kernels.items():
        fan_in = int(np.prod(v.shape[:-1]))
        std = np.sqrt(2.0 / fan_in)
        assert abs(v.std() / std - 1) < 0.25, (k, v.std(), std)
        z.append(v.ravel() / std)
    big = kernels["stage3_block0/conv2/kernel"]                    # 3*3*16*16 = 2304 weights, fan_in 144
    assert big.size == 2304
    assert abs(big.std() / np.sqrt(2.0 / 144) - 1) < 0.10
    z = np.concatenate(z)
    assert abs(z.std() - 1) < 0.05 and abs(z.mean()) < 0.05
    assert np.abs(z).max() > 3.0        # a truncated normal (|z| <= 2.28) would fail this

    x = jax.random.normal(jax.random.key(1), (3, *SHAPE))
    logits = get_model("cifar_resnet_8_4").apply(resnet8_variables, x, train=False)
    assert logits.shape == (3, 10) and logits.dtype == jnp.float32
    assert np.all(np.isfinite(logits))


def test_imagenet_resnets_are_initialised_as_the_official_elth_code():
    """OpenLTH's kaiming_normal, which the official E-LTH code applies to every conv and the classifier: std
    sqrt(2 / fan_in). torchvision's fan-out init is 4.6x (the stem at width 64), 2x (1x1 expansions) or sqrt(2)
    (convs that double the channels: stride-2 downsampling) away from it. One layer of each kind, to 10% (its mean
    to a tenth of the std), in a two-stage Bottleneck network: it compiles fast and its convs are built as
    BasicBlock's are (`_Block.layers`)."""
    from elax.models import init_variables
    from elax.models.imagenet_resnet import ImageNetResNet
    model = ImageNetResNet((1, 1), bottleneck=True, family="imagenet_resnet_bottleneck", width=32)
    params = init_variables(model, jax.random.key(0), (32, 32, 3))["params"]
    kinds = {"stem_conv": "7x7/2 stem", "stage1_block0/conv1": "1x1", "stage1_block0/conv2": "3x3",
             "stage1_block0/conv3": "1x1 expansion", "stage1_block0/downsample_conv": "1x1 downsampling",
             "stage2_block0/conv2": "3x3/2", "stage2_block0/downsample_conv": "1x1/2 downsampling",
             "head": "classifier"}
    for path, kind in kinds.items():
        w = np.asarray(_leaf(params, f"{path}/kernel"))
        std = np.sqrt(2.0 / np.prod(w.shape[:-1]))
        assert w.size >= 1024 and abs(w.std() / std - 1) < 0.1 and abs(w.mean()) < 0.1 * std, (kind, w.std(), std)


def _leaf(tree, path: str):
    for key in path.split("/"):
        tree = tree[key]
    return tree


def test_bfloat16_model_float32_params_and_logits(resnet8_variables):
    model16 = get_model("cifar_resnet_8_4", dtype=jnp.bfloat16)
    abstract = abstract_variables(model16)
    for leaf in jax.tree.leaves(abstract):
        assert leaf.dtype == jnp.float32
    assert jax.tree.structure(abstract) == jax.tree.structure(resnet8_variables)
    x = np.random.default_rng(1).standard_normal((3, *SHAPE)).astype(np.float32)
    apply = lambda model: jax.jit(functools.partial(model.apply, train=False))   # one program, not one per op
    logits16 = apply(model16)(resnet8_variables, x)
    logits32 = apply(get_model("cifar_resnet_8_4"))(resnet8_variables, x)
    assert logits16.dtype == jnp.float32 and logits16.shape == (3, 10)
    assert not np.array_equal(logits16, logits32)    # really computed in bfloat16
    np.testing.assert_allclose(logits16, logits32, atol=0.05 * float(np.abs(logits32).max()) + 0.05)


def test_cpu_init_compiled_faster_gives_the_default_compilation_values():
    import toy_family  # noqa: F401  (a few layers: compiling at the default level stays cheap)
    from elax import models
    model = models.get_model("toy_2-2_w4-8", num_classes=5)
    expected = jax.jit(lambda key: model.init(key, jnp.zeros((1, 6, 6, 3)), train=False))(jax.random.key(3))
    got = models.init_variables(model, jax.random.key(3), (6, 6, 3))
    jax.tree.map(np.testing.assert_array_equal, got, expected)
