"""The paper-faithful configuration, for a GPU: torchvision ResNet-18 (gray -> 3 channels, ImageNet
normalisation in the graph) at 224 px, clients training with SGD lr 0.01 as in the paper, and the corrected
attack at the paper's scale (preset ``gpu``: 20k iterations; ``--preset paper`` for the released
hyper-parameters, 40k iterations). A 1-image "high-risk" hospital and an 8-image hospital with batch 4.

On a CPU one attack iteration of ResNet-18 at 224 px costs ~0.17 s (N=1) to ~1.1 s (N=8): hours per update.

    python jobs/gradinv_paper_gpu/job.py [--preset gpu|paper] [--workspace DIR]   # simulate
    python jobs/gradinv_paper_gpu/job.py --job-dir DIR                            # export for POC / admin
"""

import argparse

from gradinv.fl.job import JobSettings, export_job, simulate
from gradinv.recipe import TrainingRecipe

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--job-dir", help="export the job folder here instead of simulating")
    parser.add_argument("--workspace", default="workspace/paper_gpu", help="simulator workspace root")
    parser.add_argument("--preset", default="gpu", choices=("gpu", "paper"))
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    settings = JobSettings(
        name="gradinv_paper_gpu", model="resnet18", resolution=224, images_per_site=(1, 8), num_rounds=args.rounds,
        training=TrainingRecipe(lr=0.01, batch_size=4),
        # minutes per update even on a GPU: never hold the server's result path that long
        filter={"preset": args.preset, "device": "auto", "mode": "audit"},
    )
    if args.job_dir:
        print(export_job(settings, args.job_dir))
    else:
        print(simulate(settings, args.workspace))
