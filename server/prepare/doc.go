// Package prepare is the coordinator's side of a job's model: it turns a
// job spec into the model spec the sites build their trainers from, the
// initial global weights (from a built-in trainer, an uploaded file or an
// init task on a site) and the evaluation of each global model on the
// coordinator's own test set. [CoordinatorModels] serves a deployed
// coordinator (`cohort coordinator`), [Models] the in-process federation
// of `cohort run`; both implement server.ModelProvider. It is the one
// part of the coordinator that imports train and data, so that the
// coordinator's core (package server) stays free of them.
package prepare
