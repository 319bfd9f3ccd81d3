// Package mlflowserver serves MLflow's tracking REST API 2.0 over Cohort's
// embedded SQLite tracking store, so the standard MLflow clients (python
// mlflow with MLFLOW_TRACKING_URI=http://host:5000, the MLflow Java and R
// clients, Cohort's own tracking/mlflowclient) log into it: experiments,
// runs, metrics, params, tags, batches, dataset inputs, logged models
// (runs/log-model), run search with MLflow's filter grammar, metric
// histories, and artifacts through the mlflow-artifacts proxy (runs it
// creates report artifact URIs mlflow-artifacts:/<experiment>/<run>/artifacts).
// Every path is also served under /ajax-api/, as MLflow does; errors are
// MLflow's JSON {"error_code", "message"} with MLflow's HTTP statuses.
// [Server] is an [http.Handler]; [LoadAuth] builds an optional HTTP Basic
// or bearer-token [Authenticator].
//
// The routes MLflow keeps for its web UI are served where MLflow serves
// them: POST /ajax-api/2.0/mlflow/experiments/search-datasets (also under
// /api), GET /ajax-api/2.0/mlflow/metrics/get-history-bulk (at most 100
// runs and 25,000 points), GET …/metrics/get-history-bulk-interval (at
// most 100 runs, 2,500 sampled steps), POST
// /ajax-api/2.0/mlflow/upload-artifact?run_uuid=…&path=… (at most 10 MB),
// GET /get-artifact?run_id=…&path=… and GET
// /model-versions/get-artifact?name=…&version=…&path=….
//
// # Bad requests
//
// A request is checked as MLflow's handlers check it: against the
// endpoint's schema, parameter by parameter in MLflow's order, then the
// values, then whether the experiment or run exists. The messages are
// MLflow's, with MLflow's parameter names and Python's type names:
//
//	Missing value for required parameter 'run_id'. See the API docs for more information about request parameters.
//	Invalid value "abc" for parameter 'max_results' supplied:  Hint: Value was of type 'str'. See the API docs for more information about request parameters.
//	Invalid metric name: 'acc(%)'. Names may only contain alphanumerics, underscores (_), dashes (-), periods (.), spaces ( ), colon(:) and slashes (/).
//	Run with id=… not found
//	No Experiment with id=… exists
//
// # Where Cohort deliberately differs from MLflow
//
// Each difference answers in MLflow's error format (INVALID_PARAMETER_VALUE,
// 400, unless said otherwise):
//
//   - experiments/create with an artifact_location is refused: every
//     experiment's artifacts live under the server's own artifact root, so
//     a client cannot make the server write elsewhere.
//   - A body that is not JSON is refused ("Malformed JSON in request body
//     at byte N"); MLflow reads it as an empty object and then reports a
//     missing parameter, or acts on defaults. A JSON value that is not an
//     object (a list, a number) is refused; MLflow fails with a 500.
//   - A POST with no Content-Type at all is read as JSON (MLflow refuses
//     it). Any other media type than application/json is refused with
//     MLflow's "Bad Request. Content-Type must be one of
//     ['application/json']." — the check that stops cross-site form posts.
//   - An integer parameter given a fraction (1.5) or a boolean, or a
//     number parameter given a boolean, is refused with MLflow's "Invalid
//     value" message; Python's int() and float() would quietly take them.
//     null is an absent parameter, as protobuf reads it.
//   - runs/update with a status that is not RUNNING, SCHEDULED, FINISHED,
//     FAILED or KILLED is refused before the store is touched.
//   - get-history-bulk with a max_results that is not a non-negative
//     integer is refused (MLflow fails with a 500); a run ID given twice
//     is answered once; get-artifact of a file that does not exist is 404
//     RESOURCE_DOES_NOT_EXIST and of a directory 400 (MLflow: 500), and a
//     missing run_id or path is MLflow's missing-parameter error (MLflow:
//     an HTML 400 or "Run with id=None not found").
//   - upload-artifact reads at most 10 MB whether or not the client sent
//     a Content-Length.
//   - runs/log-model keeps the client's model JSON as sent (compacted) in
//     the mlflow.log-model.history list; MLflow rebuilds it through its
//     Model class first. A history that would pass the tag-value limit
//     (8,000 characters) is refused and left as it was, never truncated
//     into invalid JSON. A model_json that is JSON but not an object is
//     "Malformed model info" (MLflow: a 500).
//   - search-datasets answers in a stable order (experiment, name, digest,
//     context) and needs decimal experiment IDs; like MLflow it ignores
//     max_results and returns at most 1,000 summaries, deleted runs'
//     datasets included.
//   - get-history-bulk-interval samples a window that does not start at
//     step 0 as newer MLflow does; MLflow 2.11's handler lost the window's
//     samples there.
//   - A path that climbs out with "..", is absolute or holds a backslash
//     is "Invalid path: '…'" with a hint (MLflow: "Invalid path"); every
//     artifact access goes through an os.Root, so no path or symbolic link
//     leads outside the artifact root.
//   - A value quoted in an "Invalid value" message is cut at 250
//     characters, and written as Go's encoder writes JSON (non-ASCII as
//     is, numbers as sent) where Python's json.dumps would differ.
//   - Only metric, param and tag names and lengths, batch limits and the
//     checks above use MLflow's exact words; the store's own checks (for
//     example of dataset inputs) answer INVALID_PARAMETER_VALUE in
//     Cohort's words.
//
// Where MLflow is lenient, so is this server: log-parameter and set-tag
// without a value set "", a run naming a parent run (mlflow.parentRunId)
// that does not exist is created all the same, log-inputs with an empty
// datasets list does nothing (with no datasets at all it is MLflow's
// missing-parameter error), numbers may come as strings, and a body that
// is a JSON string holding JSON (older clients) is decoded twice.
package mlflowserver
