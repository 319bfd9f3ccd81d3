// Package ui is the web UI of Cohort's tracking store, served by `cohort ui`:
// the experiments, each experiment's run tree (job run → arm runs → site
// runs, nested through [tracking.TagParentRunID]) with status, duration and
// key metrics, a page per run (info, params, tags, dataset inputs,
// artifacts, one chart per metric) and the comparison page of a job run
// (accuracy per round of each federated arm against the centralized arm per
// epoch, energy and time per arm, per-site figures, accuracy against
// cumulative energy, and the comparison table), and the model registry: the
// registered models, a page per model with its versions and the key tags a
// Cohort job writes on them, and a page per version with its lineage (the
// version's run, that run's job run, the arm, the arm's site runs and the
// digests of the data each site trained on). Pages are rendered on the
// server with html/template and plain CSS; charts are inline SVG drawn in
// Go; nothing is fetched from the network and no JavaScript runs.
package ui
