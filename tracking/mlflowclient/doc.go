// Package mlflowclient logs Cohort's runs into a remote MLflow tracking
// server over MLflow's REST API 2.0, with the same layout as the embedded
// store (job run → arm runs → site runs, nested through the
// mlflow.parentRunId tag). A [Client] authenticates as MLflow's own
// client does (MLFLOW_TRACKING_USERNAME/PASSWORD or MLFLOW_TRACKING_TOKEN,
// MLFLOW_TRACKING_SERVER_CERT_PATH, MLFLOW_TRACKING_INSECURE_TLS) and
// retries transient failures with exponential backoff, jitter and
// Retry-After. Every write (log-batch, update-run, log-inputs, artifacts,
// and run and experiment creation while the server is unreachable) first
// goes to a bounded on-disk spool of checksummed, fsync'd segment files
// and is sent in order by [Client.Run] or [Client.Flush], so a tracking
// server that goes away mid-job, or is down when the job starts, neither
// stalls the federated job nor loses a point, and a restarted process
// replays what the last one could not send. Reads flush first and then
// ask the server.
//
// Creates are idempotent: each run (and model version) carries a random
// [TagCreateKey] tag, and a create whose answer was lost is looked up by
// it before it is sent again, so retries and replays leave one run.
//
// The client is also a [tracking.ModelRegistrar] (registered models,
// versions and aliases, written synchronously at a job's end once the
// spool has been flushed) and reads the registry and downloads a model's
// artifacts through the server's mlflow-artifacts proxy
// ([Client.DownloadArtifacts]), for `cohort models`.
package mlflowclient
