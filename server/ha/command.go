package ha

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/crc32"
)

// encodingVersion is the version byte of the commands this node writes;
// snapshots are still written as version 1. Decode reads versions 1 and 2.
const (
	encodingVersion = 2
	snapshotVersion = 1
)

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
	CmdSetCluster
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
	// Totals are a round's cumulative counters (energy, bytes) for [CmdCommitRound].
	Totals map[string]float64 `json:"totals,omitempty"`
	// External, on [CmdSealBlob], records a blob by its digest and size
	// only: its bytes stay outside the log ([Config.DigestsOnly]).
	External bool `json:"external,omitempty"`
	// ClusterID is the cluster's identity for [CmdSetCluster].
	ClusterID string `json:"cluster_id,omitempty"`
	// Stored, on [CmdSealBlob], records a blob whose bytes are in the
	// nodes' blob stores ([Config.Blobs]), not in the log: a node lacking
	// it fetches it from From (the node that put it), else from any peer,
	// before the entry is applied.
	Stored bool `json:"stored,omitempty"`
	// From is the id of the node that put a Stored blob.
	From string `json:"from,omitempty"`
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Encode returns c as a log entry (version 2): a version byte, a CRC-32C
// of the rest, the length of the JSON header (4 bytes, big-endian), the
// header — c without Data, as JSON — and Data as raw bytes, so that model
// chunks cost no base64.
func Encode(c Command) ([]byte, error) {
	data := c.Data
	c.Data = nil
	h, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("encoding command: %w", err)
	}
	b := make([]byte, 9, 9+len(h)+len(data))
	b[0] = encodingVersion
	binary.BigEndian.PutUint32(b[5:9], uint32(len(h)))
	b = append(append(b, h...), data...)
	binary.BigEndian.PutUint32(b[1:5], crc32.Checksum(b[5:], castagnoli))
	return b, nil
}

// Decode parses a log entry written by [Encode] (or version 1: the
// command as JSON after the version byte and CRC). A damaged entry is an
// error wrapping [ErrBadCommand]; a newer one wraps [ErrUnsupportedVersion].
// The returned Data aliases b.
func Decode(b []byte) (Command, error) {
	var c Command
	if len(b) < 5 {
		return c, fmt.Errorf("decoding command of %d bytes: %w", len(b), ErrBadCommand)
	}
	if b[0] != 1 && b[0] != 2 {
		return c, fmt.Errorf("decoding command version %d (this node reads 1 and 2): %w", b[0], ErrUnsupportedVersion)
	}
	p := b[5:]
	if crc32.Checksum(p, castagnoli) != binary.BigEndian.Uint32(b[1:5]) {
		return c, fmt.Errorf("decoding command: checksum mismatch: %w", ErrBadCommand)
	}
	var data []byte
	if b[0] == 2 {
		if len(p) < 4 || uint64(binary.BigEndian.Uint32(p[:4])) > uint64(len(p)-4) {
			return c, fmt.Errorf("decoding command: header length past the entry's end: %w", ErrBadCommand)
		}
		n := binary.BigEndian.Uint32(p[:4])
		p, data = p[4:4+n], p[4+n:]
	}
	if err := json.Unmarshal(p, &c); err != nil {
		return c, fmt.Errorf("decoding command: %v: %w", err, ErrBadCommand)
	}
	if b[0] == 2 {
		if c.Data != nil {
			return c, fmt.Errorf("decoding command: data both in the header and after it: %w", ErrBadCommand)
		}
		if len(data) > 0 {
			c.Data = data
		}
	}
	return c, nil
}
