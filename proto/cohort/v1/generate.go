// Package cohortv1 is the generated Go code of Cohort's gRPC contract
// (cohort.proto): the CoordinatorService that sites dial and the JobsService
// that admins use. Regenerate with `go generate ./proto/...`, which needs
// protoc (Debian's protobuf-compiler) and uses the protoc-gen-go and
// protoc-gen-go-grpc versions pinned as tools in go.mod.
package cohortv1

//go:generate sh -c "protoc --plugin=protoc-gen-go=\"$(go tool -n protoc-gen-go)\" --plugin=protoc-gen-go-grpc=\"$(go tool -n protoc-gen-go-grpc)\" --go_out=. --go_opt=paths=source_relative --go-grpc_out=. --go-grpc_opt=paths=source_relative cohort.proto"
