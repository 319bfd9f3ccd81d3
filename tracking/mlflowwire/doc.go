// Package mlflowwire is MLflow's REST API 2.0 in JSON, as
// mlflow/protos/service.proto and model_registry.proto spell it, written
// once for both ends: the REST client (tracking/mlflowclient) and the
// server (tracking/mlflowserver). It holds the entities (runs,
// experiments, metrics, datasets, files, registered models and their
// versions), the request and response envelopes both ends exchange, the
// conversions to and from the tracking package's types, and MLflow's
// number quirks: an [Int64] is read from a JSON number or a decimal
// string and written as a number, and a [Float64] writes NaN and ±Inf as
// the strings "NaN", "Infinity" and "-Infinity" and reads them back.
//
// A field a request may leave out, where the server tells absent from
// zero (a run's start time, a search's max_results), is a pointer;
// decoding never fails on an unknown field, as MLflow ignores them.
// Values that cannot be decoded fail with a [*json.UnmarshalTypeError]
// whose Value is the JSON as sent, so a server can name the parameter in
// its reply.
package mlflowwire
