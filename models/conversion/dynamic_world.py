"""Convert Google's Dynamic World forward SavedModel to TerraSeg's PyTorch port, and check the port.

Not a runtime dependency: run it once in a throwaway environment that has TensorFlow (CPU) beside the
project's torch, from the repository root:

    python3.11 -m venv /tmp/tfenv
    /tmp/tfenv/bin/pip install tensorflow-cpu -e .   # TerraSeg itself (torch==2.13.0, CPU) beside TensorFlow
    /tmp/tfenv/bin/python -m models.conversion.dynamic_world /path/to/dynamic_world_model \\
        tests/data/s2_slovenia_eolearn

The SavedModel is not shipped in this repository (its converted weights are): it is Google's Dynamic World
"forward" model, published with the Dynamic World paper's code (github.com/google/dynamicworld, Apache-2.0,
`model/forward`), and a copy with its licence, NOTICE and input contract sits in the project's shared data
folder (`dynamic_world_model/`) for whoever has that folder.

It reads every variable of the SavedModel, copies it into `models.dynamic_world.DynamicWorldNet` (Keras
NHWC kernels become NCHW), runs both networks on the clear dates of the real Slovenia scenes, prints the mean
absolute difference of the class probabilities and the argmax agreement as JSON, and writes:

- models/weights/dynamic_world/dynamic_world_forward.pt (the state dict; its sha256 goes into the model card);
- tests/models/data/dynamic_world_tf_reference.npz (TensorFlow's probabilities for those dates, the golden
  reference of tests/models/test_dynamic_world.py).
"""

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from models.dynamic_world import BANDS, DynamicWorldNet, normalise_dn, tf_layer_map  # noqa: E402

WEIGHTS_PATH = ROOT / "models" / "weights" / "dynamic_world" / "dynamic_world_forward.pt"
REFERENCE_PATH = ROOT / "tests" / "models" / "data" / "dynamic_world_tf_reference.npz"
S2_ORDER = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12")
# REFERENCE_SCENES frames 0..4 are these indices of timestamps.json (tests/data/README.md).
FRAME_TO_TIMESTAMP = (2, 1, 4, 3, 0)
CLEAR_MAX_CLOUD_FRACTION = 0.01


def clear_frames(slovenia: Path) -> list[int]:
    """Frames whose s2cloudless mask (CLM_S2C, real, shipped with the scenes) has at most 1 % cloud."""
    cloud_masks = np.load(slovenia / "CLM_S2C.npy")
    fractions = [float(cloud_masks[t].mean()) for t in FRAME_TO_TIMESTAMP]
    return [frame for frame, fraction in enumerate(fractions) if fraction <= CLEAR_MAX_CLOUD_FRACTION]


def model_input(slovenia: Path, frames: list[int]) -> np.ndarray:
    """(N, 9, H, W) normalised input from TOA reflectance: DN = reflectance x 10000, bands in the model's order."""
    scenes = np.load(slovenia / "REFERENCE_SCENES.npy")[frames]  # (N, H, W, 13)
    dn = scenes[..., [S2_ORDER.index(b) for b in BANDS]].transpose(0, 3, 1, 2) * 10_000.0
    return normalise_dn(dn)


def tf_variables(saved_model: Path) -> tuple[object, dict[str, np.ndarray]]:
    import tensorflow as tf  # tensorflow: the one-off conversion only, never installed with TerraSeg

    model = tf.saved_model.load(str(saved_model))
    return model, {v.name.removesuffix(":0"): v.numpy() for v in model.variables}


def state_dict_from_tf(variables: dict[str, np.ndarray]) -> dict[str, Any]:
    """Map every SavedModel variable onto DynamicWorldNet's parameters; fail on any left over or missing."""
    import torch  # torch: only the steps that build PyTorch weights load it

    state: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    for tf_conv, (prefix, tf_norm) in tf_layer_map().items():
        depthwise = tf_conv.startswith("depthwise")
        kernel = variables[f"{tf_conv}/depthwise_kernel" if depthwise else f"{tf_conv}/kernel"]
        # Keras: (kh, kw, in, out) or depthwise (kh, kw, in, 1); PyTorch: (out, in/groups, kh, kw).
        weight = kernel.transpose(2, 3, 0, 1) if depthwise else kernel.transpose(3, 2, 0, 1)
        state[f"{prefix}.weight"] = torch.from_numpy(np.ascontiguousarray(weight))
        state[f"{prefix}.bias"] = torch.from_numpy(variables[f"{tf_conv}/bias"])
        used |= {f"{tf_conv}/depthwise_kernel" if depthwise else f"{tf_conv}/kernel", f"{tf_conv}/bias"}
        if tf_norm:
            norm_prefix = prefix.rsplit(".", 1)[0] + ".1"
            for tf_name, torch_name in (
                ("gamma", "weight"),
                ("beta", "bias"),
                ("moving_mean", "running_mean"),
                ("moving_variance", "running_var"),
            ):
                state[f"{norm_prefix}.{torch_name}"] = torch.from_numpy(variables[f"{tf_norm}/{tf_name}"])
                used.add(f"{tf_norm}/{tf_name}")
            state[f"{norm_prefix}.num_batches_tracked"] = torch.tensor(0)
    left_over = sorted(set(variables) - used)
    if left_over:
        raise SystemExit(f"SavedModel variables not mapped: {left_over}")
    return state


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("saved_model_dir", type=Path, help="the folder holding forward/ (saved_model.pb)")
    parser.add_argument(
        "slovenia_dir", type=Path, help="s2_slovenia_eolearn (REFERENCE_SCENES.npy, CLM_S2C.npy)"
    )
    args = parser.parse_args()

    import tensorflow as tf  # tensorflow: the one-off conversion only, never installed with TerraSeg
    import torch  # torch: only the steps that build PyTorch weights load it

    frames = clear_frames(args.slovenia_dir)
    inputs = model_input(args.slovenia_dir, frames)
    tf_model, variables = tf_variables(args.saved_model_dir / "forward")
    serving = tf_model.signatures["serving_default"]  # type: ignore[attr-defined]
    tf_logits = serving(input_3=tf.constant(inputs.transpose(0, 2, 3, 1)))["functional_1"].numpy()
    tf_probs = tf.nn.softmax(tf_logits, axis=-1).numpy().transpose(0, 3, 1, 2)  # (N, 9, H, W)

    net = DynamicWorldNet().eval()
    state = state_dict_from_tf(variables)
    net.load_state_dict(state, strict=True)
    with torch.inference_mode():
        torch_probs = torch.softmax(net(torch.from_numpy(inputs)), dim=1).numpy()

    mad = float(np.abs(torch_probs - tf_probs).mean())
    agreement = float((torch_probs.argmax(1) == tf_probs.argmax(1)).mean())
    WEIGHTS_PATH.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), WEIGHTS_PATH)
    REFERENCE_PATH.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(REFERENCE_PATH, frames=np.array(frames), probabilities=tf_probs.astype(np.float32))
    print(
        json.dumps(
            {
                "clear_frames": frames,
                "pixels": int(tf_probs.shape[0] * tf_probs.shape[2] * tf_probs.shape[3]),
                "mean_abs_diff": mad,
                "max_abs_diff": float(np.abs(torch_probs - tf_probs).max()),
                "argmax_agreement": agreement,
                "weights": str(WEIGHTS_PATH.relative_to(ROOT)),
                "weights_sha256": hashlib.sha256(WEIGHTS_PATH.read_bytes()).hexdigest(),
                "tensorflow": tf.__version__,
                "torch": torch.__version__,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
