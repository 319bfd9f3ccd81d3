package server

import (
	"strings"

	"google.golang.org/grpc/status"
)

func contains(s, sub string) bool { return strings.Contains(s, sub) }

func statusCode(err error) string { return status.Code(err).String() }
