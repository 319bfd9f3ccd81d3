package ha

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/crc32"
)

// encodingVersion is the version byte of every command and snapshot.
const encodingVersion = 1

// CommandType names a command.
type CommandType uint8

// The commands the FSM applies.
const (
	CmdSubmitJob CommandType = iota + 1
	CmdSetJobStatus
	CmdSetRunIDs
	CmdPutBlobChunk
	CmdSealBlob
	CmdCommitRound
	CmdRegisterSite
)

// Command is one state change. Type selects which fields matter. At is the
// leader's clock when the command was made: the FSM never reads the clock,
// so that Apply is deterministic.
type Command struct {
	Type   CommandType `json:"type"`
	At     int64       `json:"at"` // Unix nanoseconds
	JobID  string      `json:"job_id,omitempty"`
	Spec   []byte      `json:"spec,omitempty"`
	Status JobStatus   `json:"status,omitempty"`
	Reason string      `json:"reason,omitempty"`
	RunIDs *RunIDs     `json:"run_ids,omitempty"`
	Arm    string      `json:"arm,omitempty"`
	Round  int         `json:"round,omitempty"`
	Digest string      `json:"digest,omitempty"`
	Offset int64       `json:"offset,omitempty"`
	Size   int64       `json:"size,omitempty"`
	Data   []byte      `json:"data,omitempty"`
	Site   *Site       `json:"site,omitempty"`
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Encode returns c as a log entry: a version byte, a CRC-32C of the
// payload, and the payload (JSON).
func Encode(c Command) ([]byte, error) {
	p, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("encoding command: %w", err)
	}
	b := make([]byte, 5, 5+len(p))
	b[0] = encodingVersion
	binary.BigEndian.PutUint32(b[1:5], crc32.Checksum(p, castagnoli))
	return append(b, p...), nil
}

// Decode parses a log entry written by [Encode]. A damaged entry is an
// error wrapping [ErrBadCommand]; a newer one wraps [ErrUnsupportedVersion].
func Decode(b []byte) (Command, error) {
	var c Command
	if len(b) < 5 {
		return c, fmt.Errorf("decoding command of %d bytes: %w", len(b), ErrBadCommand)
	}
	if b[0] != encodingVersion {
		return c, fmt.Errorf("decoding command version %d (this node reads %d): %w", b[0], encodingVersion, ErrUnsupportedVersion)
	}
	p := b[5:]
	if crc32.Checksum(p, castagnoli) != binary.BigEndian.Uint32(b[1:5]) {
		return c, fmt.Errorf("decoding command: checksum mismatch: %w", ErrBadCommand)
	}
	if err := json.Unmarshal(p, &c); err != nil {
		return c, fmt.Errorf("decoding command: %v: %w", err, ErrBadCommand)
	}
	return c, nil
}
