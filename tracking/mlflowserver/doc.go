// Package mlflowserver serves MLflow's tracking REST API 2.0 over Cohort's
// embedded SQLite tracking store, so the standard MLflow clients (python
// mlflow with MLFLOW_TRACKING_URI=http://host:5000, the MLflow Java and R
// clients, Cohort's own tracking/mlflowclient) log into it: experiments,
// runs, metrics, params, tags, batches, dataset inputs, run search with
// MLflow's filter grammar, metric histories, and artifacts through the
// mlflow-artifacts proxy (runs it creates report artifact URIs
// mlflow-artifacts:/<experiment>/<run>/artifacts). Every path is also
// served under /ajax-api/, as MLflow does; errors are MLflow's JSON
// {"error_code", "message"} with MLflow's HTTP statuses. [Server] is an
// [http.Handler]; [LoadAuth] builds an optional HTTP Basic or bearer-token
// [Authenticator].
package mlflowserver
