"""The default gradinv job: FedAvg over 3 hospitals (1, 2 and 4 images), every update inverted by the server.

    python jobs/gradinv_demo/job.py                      # run in the NVFlare simulator (same as `gradinv demo`)
    python jobs/gradinv_demo/job.py --job-dir DIR        # export the job folder for POC / admin submission

(NVFlare reserves --export / --export-dir, hence --job-dir.)
"""

import argparse

from gradinv.fl.job import JobSettings, export_job, simulate

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--job-dir", help="export the job folder here instead of simulating")
    parser.add_argument("--workspace", default="workspace/demo", help="simulator workspace root")
    args = parser.parse_args()
    settings = JobSettings()
    if args.job_dir:
        print(export_job(settings, args.job_dir))
    else:
        print(simulate(settings, args.workspace))
