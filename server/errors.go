package server

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Errors returned by the coordinator. The gRPC layer maps them to status
// codes in one place, [toStatus].
var (
	// ErrUnknownSite is returned when a call names a site or session that is
	// not registered.
	ErrUnknownSite = errors.New("unknown site")
	// ErrUnknownJob is returned when a call names a job that does not exist.
	ErrUnknownJob = errors.New("unknown job")
	// ErrUnknownTask is returned when an update or fetch names a task the
	// coordinator is not waiting for (finished, cancelled or never sent).
	ErrUnknownTask = errors.New("unknown or finished task")
	// ErrUnknownModel is returned by FetchModel for a model id it does not hold.
	ErrUnknownModel = errors.New("unknown model")
	// ErrBadInput is returned when a request is malformed: a bad job file, an
	// update with the wrong shapes, non-finite values or a bad checksum.
	ErrBadInput = errors.New("invalid input")
	// ErrStaleRound is returned for an update that arrives after its round closed.
	ErrStaleRound = errors.New("round already closed")
	// ErrNotYourTask is returned when a site pushes an update for a task
	// the coordinator gave another site (its certificate names another).
	ErrNotYourTask = errors.New("task belongs to another site")
	// ErrTaskMismatch is returned when an update's header names another
	// job, arm or round than its task.
	ErrTaskMismatch = errors.New("update does not match its task")
	// ErrRateLimited is returned when a caller makes more calls than the
	// coordinator's rate limits allow, or a table bounded per site is full.
	ErrRateLimited = errors.New("rate limited")
	// ErrSessionExpired ends the session of a site that sent nothing, not
	// even a heartbeat, for [Config.SessionTimeout].
	ErrSessionExpired = errors.New("session expired")
	// ErrClosed is returned once the coordinator is shutting down.
	ErrClosed = errors.New("coordinator shutting down")
	// ErrSiteConnected is returned when a site joins or opens its session
	// while another agent (another instance, with the same name) holds a
	// live session: two agents with one kit. It maps to
	// FailedPrecondition, which tells the agent not to retry.
	ErrSiteConnected = errors.New("site already connected")
)

// toStatus maps an error to a gRPC status. A bare error reaching gRPC as
// Unknown would be a bug, so everything goes through here.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok && status.Code(err) != codes.Unknown {
		return err
	}
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return status.FromContextError(err).Err()
	case errors.Is(err, ErrUnknownSite), errors.Is(err, ErrUnknownJob),
		errors.Is(err, ErrUnknownTask), errors.Is(err, ErrUnknownModel):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, ErrStaleRound), errors.Is(err, ErrTaskMismatch), errors.Is(err, ErrSiteConnected):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, ErrNotYourTask):
		return status.Error(codes.PermissionDenied, err.Error())
	case errors.Is(err, ErrBadInput):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, ErrRateLimited):
		return status.Error(codes.ResourceExhausted, err.Error())
	case errors.Is(err, ErrClosed), errors.Is(err, ErrSessionExpired):
		return status.Error(codes.Unavailable, err.Error())
	default:
		return status.Error(codes.Internal, err.Error())
	}
}

func badInput(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrBadInput, fmt.Sprintf(format, args...))
}
