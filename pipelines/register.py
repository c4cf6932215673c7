"""DVC stage `register`: the evaluated model version becomes `challenger`, and maybe `champion`.

Reads the version from models/run.json and its test AJI (per-image mean) from metrics/test.json.
The `champion` alias moves to it only when that AJI beats the current champion's (or there is
no champion); the reason goes into the version's `promotion` tag and models/registry.json.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from patchunet import tracking
from patchunet.cli import run_stage
from patchunet.config import MlflowConfig, load_params, parse_section
from patchunet.io import read_json_value, write_json
from patchunet.layout import REGISTRY_FILE, RUN_FILE, TEST_METRICS
from patchunet.promotion import decide_promotion

CHAMPION, CHALLENGER = "champion", "challenger"
AJI_TAG = "test_aji"
EVAL_TAG = "eval_params"  # the evaluate stage's hash of its eval params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args()
    mlflow_cfg = parse_section(MlflowConfig, load_params(args.params), "mlflow")
    version = read_json_value(RUN_FILE, "version")
    aji = read_json_value(TEST_METRICS, "per_image_mean", "aji")
    name = mlflow_cfg.registered_model

    tracking.connect(tracking.resolve_tracking_uri(mlflow_cfg.tracking_uri))
    candidate = tracking.get_version(name, version)  # one line if the store does not hold it
    champion = tracking.version_by_alias(name, CHAMPION)
    champion_version = int(champion.version) if champion else None
    champion_aji = float(champion.tags[AJI_TAG]) if champion and AJI_TAG in champion.tags else None
    same_protocol = champion is None or champion.tags.get(EVAL_TAG) == candidate.tags.get(EVAL_TAG)
    decision = decide_promotion(version, aji, champion_version, champion_aji, same_protocol)

    tracking.set_alias(name, CHALLENGER, version)
    if decision.promote:
        tracking.set_alias(name, CHAMPION, version)
    tracking.set_version_tags(name, version, {"promotion": decision.reason})
    now_champion = version if decision.promote else champion_version
    write_json(
        REGISTRY_FILE,
        {
            "registered_model": name,
            "version": version,
            "test_aji": aji,
            "champion": now_champion,
            "challenger": version,
            "promoted": decision.promote,
            "reason": decision.reason,
        },
    )
    print(f"register: {name} v{version} is challenger; champion is v{now_champion} ({decision.reason})")


if __name__ == "__main__":
    run_stage(main)
