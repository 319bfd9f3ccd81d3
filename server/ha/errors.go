package ha

import (
	"errors"
	"fmt"
)

// Errors returned by the FSM and the commands it applies.
var (
	// ErrRoundConflict is returned when a round is committed twice or is not
	// the arm's last committed round plus one; see [RoundConflictError].
	ErrRoundConflict = errors.New("round conflict")
	// ErrUnknownJob is returned when a command names a job that does not exist.
	ErrUnknownJob = errors.New("unknown job")
	// ErrJobExists is returned when a job is submitted under an id in use.
	ErrJobExists = errors.New("job already exists")
	// ErrJobFinished is returned when a command would change a job that has
	// reached a terminal status.
	ErrJobFinished = errors.New("job already finished")
	// ErrBlobMissing is returned when a round references a blob that is not
	// sealed, or OpenModel asks for one the node does not hold.
	ErrBlobMissing = errors.New("blob missing")
	// ErrBlobCorrupt is returned when a blob's bytes do not hash to its
	// digest or a chunk does not continue the blob where it ends.
	ErrBlobCorrupt = errors.New("blob corrupt")
	// ErrRunIDConflict is returned when a tracking run id already set is set
	// to another value (runs continue after a failover, never restart).
	ErrRunIDConflict = errors.New("tracking run id already set")
	// ErrBadCommand is returned for a command that fails its checksum or
	// cannot be decoded: a corrupted log entry.
	ErrBadCommand = errors.New("corrupted command")
	// ErrUnsupportedVersion is returned for a command or snapshot written by
	// a newer version of Cohort: upgrade this node.
	ErrUnsupportedVersion = errors.New("unsupported encoding version")
	// ErrBadSnapshot is returned when a snapshot fails its checksum or
	// cannot be decoded.
	ErrBadSnapshot = errors.New("corrupted snapshot")
	// ErrInvalid is returned for a command whose fields are invalid.
	ErrInvalid = errors.New("invalid command")
	// ErrClusterMismatch is returned when a cluster id is set on a cluster
	// that already has another: the coordinators' peer lists disagree.
	ErrClusterMismatch = errors.New("cluster id mismatch")
)

// RoundConflictError is returned when a commit of Round is refused because
// the arm's last committed round is Last. It matches [ErrRoundConflict].
type RoundConflictError struct {
	JobID, Arm  string
	Last, Round int
}

// Error describes the conflict.
func (e *RoundConflictError) Error() string {
	return fmt.Sprintf("job %s arm %s: committing round %d after round %d: rounds commit once, in order", e.JobID, e.Arm, e.Round, e.Last)
}

// Is reports whether target is ErrRoundConflict.
func (e *RoundConflictError) Is(target error) bool { return target == ErrRoundConflict }
