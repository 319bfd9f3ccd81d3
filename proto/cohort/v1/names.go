package cohortv1

// PooledDataTrainer is the trainer a site lists in Capabilities.trainers
// when it holds the pooled data of a job's centralized arm: the coordinator
// sends that arm's tasks to it.
const PooledDataTrainer = "centralized"
