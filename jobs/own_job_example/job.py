"""A hospital federation's own FedAvg job, audited by gradinv with one added line (marked below).

    python prepare_data.py --out /tmp/own_job_data        # RGB medical pictures, two sites (1 and 2 images)
    python job.py --data /tmp/own_job_data                # run it in the NVFlare simulator
    python job.py --data /tmp/own_job_data --job-dir DIR  # or export the job folder for POC / admin submission

The server line attacks the job's own model (HospitalNet, taken from the job) with what each client's meta says;
``audit_datalists`` lets it read the sites' images to score the reconstructions (simulation / red-team runs only).
"""

import argparse
from pathlib import Path

from model import HospitalNet
from nvflare.app_opt.pt.recipes import FedAvgRecipe
from nvflare.recipe import SimEnv

from gradinv.fl import GradInversionAggregatorFilter

HERE = Path(__file__).resolve().parent


def build_recipe(data: Path, num_rounds: int = 1) -> FedAvgRecipe:
    sites = sorted(path.stem for path in (data / "datalists").glob("*.json"))
    recipe = FedAvgRecipe(
        name="own_job_example",
        model=HospitalNet(),
        min_clients=len(sites),
        num_rounds=num_rounds,
        train_script=str(HERE / "client.py"),
        train_args=f"--data {data}",
    )
    truth = str(data / "datalists")  # the sites' images, so that the audit can score its reconstructions
    recipe.add_server_input_filter(GradInversionAggregatorFilter(audit_datalists=truth), tasks=["train"])  # gradinv
    return recipe


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, type=Path, help="folder written by prepare_data.py")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--workspace", default="workspace/own_job_example", help="simulator workspace root")
    parser.add_argument("--job-dir", help="export the job folder here instead of simulating")
    args = parser.parse_args()
    data = args.data.resolve()
    recipe = build_recipe(data, args.rounds)
    if args.job_dir:
        recipe.export(args.job_dir)
    else:
        sites = sorted(path.stem for path in (data / "datalists").glob("*.json"))
        recipe.execute(
            SimEnv(clients=sites, num_threads=len(sites), workspace_root=str(Path(args.workspace).resolve()))
        )
