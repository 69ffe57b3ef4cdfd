"""The privacy-utility sweep (``gradinv sweep``): runs the NVFlare job once per privacy setting, then analyses
and reports the runs.

It sits above :mod:`gradinv.fl` (it runs jobs) and :mod:`gradinv.report` (it draws with the report's building
blocks), so that ``report`` never runs a job:

- :mod:`gradinv.sweep.runner`: plans and runs the simulations, one fresh interpreter each
  (:mod:`gradinv.sweep.worker`), and writes ``sweep.csv``;
- :mod:`gradinv.sweep.analysis`: sweep rows, calibrated noise per site, bisection points, rank correlation;
- :mod:`gradinv.sweep.report`: ``sweep_report.html`` and its plots.
"""
