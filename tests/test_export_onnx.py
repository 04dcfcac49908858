"""ONNX export (export_onnx, `paanet-fast export`) and running the file (onnxruntime, `predict --onnx`).

Exporting takes a while, so the module exports once, through the command line, from the checkpoint
of a small resnet18 PAANet; the checks run that file on inputs of other sizes.
"""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from deploy_cases import IMAGE_SIZE, small_model, write_checkpoint, write_images
from fake_datasets import single_thread  # noqa: F401 (fixture)
from paanet_fast import PAANet, export_onnx, ops
from paanet_fast.cli import main
from paanet_fast.export import META_IMAGE_SIZE, META_MODEL_CONFIG, META_PREPROCESSING
from paanet_fast.predict import checkpoint_network, onnx_network, predicted_probabilities

_EXTRA = 'needs the "export" extra (scripts/setup.sh installs it, so CI runs these)'
onnx = pytest.importorskip("onnx", reason=_EXTRA)
onnxruntime = pytest.importorskip("onnxruntime", reason=_EXTRA)
pytest.importorskip("onnxscript", reason=_EXTRA)

pytestmark = pytest.mark.usefixtures("single_thread")
# The export traces (2, 3, 64, 64); the file must run other batches and sizes, multiples of 32 or not,
# and sizes below the torch.export range (the padded map is then one pixel at stride 32).
SHAPES = [(2, 3, 64, 64), (1, 3, 70, 45), (3, 3, 96, 160), (1, 3, 20, 27)]


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    folder = tmp_path_factory.mktemp("onnx")
    model = small_model()
    checkpoint = write_checkpoint(folder / "best.pt", model)
    assert main(["export", "--checkpoint", str(checkpoint), "--out", str(folder / "model.onnx")]) == 0
    return SimpleNamespace(model=model, checkpoint=checkpoint, path=folder / "model.onnx")


def _session(model: onnx.ModelProto | str) -> onnxruntime.InferenceSession:
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return onnxruntime.InferenceSession(source, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("shape", SHAPES)
def test_onnxruntime_computes_what_the_model_computes(deployed, shape):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(sum(shape)))
    with torch.no_grad():
        expected = deployed.model(x).numpy()
    (got,) = _session(deployed.path).run(None, {"image": x.numpy()})
    assert got.shape == expected.shape == (shape[0], 1, *shape[2:])
    relative = np.abs(got - expected).max() / np.abs(expected).max()
    assert relative <= 1e-4, f"max relative error {relative:.2e} for input {shape}"


def test_the_file_has_dynamic_batch_height_and_width_and_says_what_it_is(deployed):
    session = _session(deployed.path)
    (source,), (result,) = session.get_inputs(), session.get_outputs()
    assert (source.name, source.shape, source.type) == ("image", ["batch", 3, "height", "width"], "tensor(float)")
    assert (result.name, result.shape) == ("logits", ["batch", 1, "height", "width"])
    metadata = session.get_modelmeta().custom_metadata_map
    assert metadata[META_IMAGE_SIZE] == str(IMAGE_SIZE)
    assert json.loads(metadata[META_MODEL_CONFIG]) == {**deployed.model.config, "backend": "auto"}
    assert "ImageNet" in metadata[META_PREPROCESSING]


def full_resolution_concats(path_or_model, feeds: dict[str, np.ndarray], size: tuple[int, int]) -> list[str]:
    """The Concat nodes whose output, when the file runs `feeds`, is a stack of (H, W) = `size` maps."""
    model = onnx.load(path_or_model) if not isinstance(path_or_model, onnx.ModelProto) else path_or_model
    assert not model.functions, "every node must be in the main graph, where this check looks"
    assert not any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
                   for node in model.graph.node for a in node.attribute), "no subgraphs either"
    concats = [node for node in model.graph.node if node.op_type == "Concat"]
    inferred = {v.name: v for v in onnx.shape_inference.infer_shapes(model).graph.value_info}
    model.graph.output.extend(inferred[node.output[0]] for node in concats)  # run them as outputs too
    values = _session(model).run([node.output[0] for node in concats], feeds)
    return [node.name for node, value in zip(concats, values) if value.ndim >= 3 and value.shape[-2:] == size]


class _MiniDecoder(torch.nn.Module):
    """Just ops.mini_decoder on two scales (strides 4 and 8), for the check's control."""

    def __init__(self, backend: str) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(1, 16, 3, 3))
        self.bias = torch.nn.Parameter(torch.randn(1))
        self.backend = backend

    def forward(self, fine: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        size = (4 * fine.shape[2], 4 * fine.shape[3])
        return ops.mini_decoder([fine, coarse], self.weight, self.bias, size, backend=self.backend)[0]


def test_the_file_has_no_full_resolution_concatenation(deployed, tmp_path):
    # Control: the check finds the literal formula's concatenation (the reference backend's), and
    # finds none in the portable formulation of the same operator.
    feeds = {"fine": np.random.default_rng(0).standard_normal((1, 8, 12, 20), dtype=np.float32),
             "coarse": np.random.default_rng(1).standard_normal((1, 8, 6, 10), dtype=np.float32)}
    args = tuple(torch.from_numpy(v) for v in feeds.values())
    for backend, expected_found in (("reference", True), ("portable", False)):
        program = torch.onnx.export(_MiniDecoder(backend).eval(), args, dynamo=True, input_names=list(feeds),
                                    verbose=False)
        found = full_resolution_concats(program.model_proto, feeds, (48, 80))
        assert bool(found) == expected_found, f"{backend}: {found}"
    # The exported model, run on an input of a padded size (a multiple of 32): no concatenation of
    # maps of that size, so the mini-decoders never stack their upsampled features.
    x = np.random.default_rng(2).standard_normal((1, 3, 64, 96), dtype=np.float32)
    assert full_resolution_concats(deployed.path, {"image": x}, (64, 96)) == []


class _StopExport(Exception):
    pass


def test_export_onnx_exports_a_portable_copy_and_leaves_the_model_alone(monkeypatch, tmp_path):
    model = small_model().train()
    before = {name: t.clone() for name, t in model.state_dict().items()}
    seen = {}

    def fake_export(module, args, **kwargs):
        seen.update(module=module, training=module.training, backend=module.backend, kwargs=kwargs)
        raise _StopExport

    monkeypatch.setattr(torch.onnx, "export", fake_export)
    with pytest.raises(_StopExport):
        export_onnx(model, tmp_path / "model.onnx", opset=19)
    assert seen["module"] is not model and seen["backend"] == "portable" and not seen["training"]
    assert seen["kwargs"]["dynamic_shapes"] is not None and seen["kwargs"]["dynamo"] is True
    assert seen["kwargs"]["opset_version"] == 19
    assert model.training and model.backend == "cpp"
    assert all(block.backend == "cpp" for block in model.decoder.blocks)
    assert all(torch.equal(t, before[name]) for name, t in model.state_dict().items())
    assert list(tmp_path.iterdir()) == []  # a failed export leaves no file behind


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(example=torch.randn(2, 1, 64, 64)), ValueError, "`example` must be a tensor of shape (B, 3, H, W)"),
    (dict(example=torch.randn(3, 64, 64)), ValueError, "`example` must be a tensor"),
    (dict(example=torch.randn(1, 3, 32, 64)), ValueError, "height and width must be at least 33"),
    (dict(opset=0), ValueError, "`opset` must be a positive integer"),
    (dict(image_size=-1), ValueError, "`image_size` must be a positive integer"),
])
def test_export_onnx_rejects_bad_arguments(tmp_path, kwargs, error, message):
    model = PAANet(**{"encoder_name": "resnet18", "num_blocks": 1, "num_layers": 1, "growth": 8},
                   encoder_weights=None)
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        export_onnx(model, tmp_path / "model.onnx", **kwargs)


def test_export_onnx_needs_a_paanet(tmp_path):
    with pytest.raises(TypeError, match="`model` must be a PAANet, got Conv2d"):
        export_onnx(torch.nn.Conv2d(3, 1, 1), tmp_path / "model.onnx")


def _without(monkeypatch, *missing: str) -> None:
    import paanet_fast.export as export

    real = export.importlib.util.find_spec
    monkeypatch.setattr(export.importlib.util, "find_spec",
                        lambda name, *args: None if name in missing else real(name, *args))


def test_missing_packages_name_the_export_extra(monkeypatch, deployed, tmp_path, capsys):
    _without(monkeypatch, "onnxscript", "onnxruntime")
    with pytest.raises(ModuleNotFoundError, match=r'needs onnxscript .*pip install "paanet_fast\[export\]"'):
        export_onnx(deployed.model, tmp_path / "model.onnx")
    assert main(["export", "--checkpoint", str(deployed.checkpoint), "--out", str(tmp_path / "model.onnx")]) == 2
    assert 'paanet_fast[export]' in capsys.readouterr().err
    images = write_images(tmp_path / "images", {"one": (40, 40)})
    assert main(["predict", "--onnx", str(deployed.path), str(images[0]), "--out", str(tmp_path / "out")]) == 2
    assert 'predict --onnx needs onnxruntime' in capsys.readouterr().err


def test_predict_onnx_writes_the_masks_of_predict_checkpoint(deployed, tmp_path):
    images = write_images(tmp_path / "images", {"wide": (37, 61), "tall": (70, 45), "big": (130, 97)}, seed=3)
    for flag, source in (("--checkpoint", deployed.checkpoint), ("--onnx", deployed.path)):
        assert main(["predict", flag, str(source), str(images[0].parent), "--out", str(tmp_path / flag),
                     "--batch-size", "2"]) == 0
    from_checkpoint, size = checkpoint_network(deployed.checkpoint, backend="cpp")
    from_onnx, onnx_size = onnx_network(deployed.path)
    assert size == onnx_size == IMAGE_SIZE
    seen = set()
    for (path, _, expected), (_, _, got) in zip(predicted_probabilities(from_checkpoint, images, size, 2),
                                                predicted_probabilities(from_onnx, images, size, 2)):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5, msg=lambda m: f"{path.name}: {m}")
        masks = [np.asarray(Image.open(tmp_path / flag / "masks" / f"{path.stem}.png"))
                 for flag in ("--checkpoint", "--onnx")]
        decided = (expected - 0.5).abs().numpy() > 1e-4  # the two may round differently at the threshold only
        assert (masks[0] == masks[1])[decided].all(), path.name
        seen |= set(np.unique(masks[1]))
    assert seen == {0, 255}, "the masks should not be all background or all foreground"


def test_predict_onnx_errors_name_the_file(deployed, tmp_path, capsys):
    images = write_images(tmp_path / "images", {"one": (40, 40)})
    run = ["predict", str(images[0]), "--out", str(tmp_path / "out")]
    assert main([*run, "--onnx", str(tmp_path / "missing.onnx")]) == 2
    assert f"ONNX file {tmp_path / 'missing.onnx'} does not exist" in capsys.readouterr().err
    (tmp_path / "text.onnx").write_text("not a model")
    assert main([*run, "--onnx", str(tmp_path / "text.onnx")]) == 2
    assert f"cannot load ONNX file {tmp_path / 'text.onnx'}" in capsys.readouterr().err
    grey = onnx.helper.make_tensor_value_info("grey", onnx.TensorProto.FLOAT, ["batch", 1, "height", "width"])
    out = onnx.helper.make_tensor_value_info("out", onnx.TensorProto.FLOAT, ["batch", 1, "height", "width"])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["grey"], ["out"])], "grey", [grey], [out])
    foreign = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)], ir_version=8)
    foreign.metadata_props.add(key=META_IMAGE_SIZE, value="64")
    onnx.save(foreign, tmp_path / "grey.onnx")
    assert main([*run, "--onnx", str(tmp_path / "grey.onnx")]) == 2
    assert "does not take one (B, 3, H, W) floating-point image: its inputs are grey" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*run, "--onnx", str(deployed.path), "--backend", "reference"])
    assert "--backend, --amp and --device apply to --checkpoint" in capsys.readouterr().err


def test_predict_onnx_asks_for_the_image_size_when_the_file_does_not_record_it(deployed, tmp_path, capsys):
    model = onnx.load(deployed.path)
    kept = [p for p in model.metadata_props if p.key != META_IMAGE_SIZE]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    onnx.save(model, tmp_path / "bare.onnx")
    images = write_images(tmp_path / "images", {"one": (40, 50)})
    run = ["predict", "--onnx", str(tmp_path / "bare.onnx"), str(images[0]), "--out", str(tmp_path / "out")]
    assert main(run) == 2
    err = capsys.readouterr().err
    assert "does not record the image size" in err and "pass --image-size" in err
    assert main([*run, "--image-size", "48"]) == 0
    assert np.asarray(Image.open(tmp_path / "out" / "masks" / "one.png")).shape == (40, 50)


def test_predict_onnx_refuses_a_file_of_fixed_shape(deployed, tmp_path, capsys):
    model = onnx.load(deployed.path)
    for dim, value in zip(model.graph.input[0].type.tensor_type.shape.dim, (2, 3, 64, 64)):
        dim.Clear()
        dim.dim_value = value
    onnx.save(model, tmp_path / "fixed.onnx")
    images = write_images(tmp_path / "images", {"one": (40, 40)})
    assert main(["predict", "--onnx", str(tmp_path / "fixed.onnx"), str(images[0]), "--out", str(tmp_path)]) == 2
    assert "fixed shape [2, 3, 64, 64]" in capsys.readouterr().err
