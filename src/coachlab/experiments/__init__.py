"""Experiments: the experiment file, the runners of simulate, train and evaluate, and what they measure.

Nothing is imported here; each module is imported where it is used. The map (see also
docs/architecture.md):

- The experiment file: `config` (the YAML file and every section's model, `load_experiment`),
  `authoring` (persona drafts and `validate`), `criteria` (checklists and example lines the teacher
  writes once for scenarios without them).
- A run folder: `runfolder` (its files, saved checklists, calibration, training scenarios),
  `results` (the episodes file and its summary), `transcripts` (Markdown per episode), `resolved`
  and `guard` (the record of what a run came from, and the check that a resumed run matches it),
  `replay` (running again from a recorded response cache).
- The runners: `simulate` (scenario x agent x trial, concurrently), `distill` (train: the tree and
  the library), `evaluate` (held-out scenarios under every condition), `controls` (the oracle,
  placebo and twin arms), `library_verify` (one strategy measured again), `calibrate` (the judge
  on a labelled set).
- What they measure: `evaluation_report` (outcomes with confidence intervals, contrasts, gap
  closed), `effects` (per-strategy effect and retiring harm), `hit_rate` (did retrieval find
  strategies of the same situation), `evaluate_markdown` (the report as Markdown).

The commands that call them are in `coachlab.cli`.
"""
