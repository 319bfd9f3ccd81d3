package ha

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// identityFile is the name, in a data dir, of the file recording which
// node and which cluster the data dir belongs to.
const identityFile = "cluster.json"

// identity is the content of cluster.json.
type identity struct {
	ClusterID string `json:"cluster_id"`
	NodeID    string `json:"node_id"`
	Peers     []Peer `json:"peers"`
}

// clusterID is the hex SHA-256 of the peers' sorted "id=raftaddr" lines:
// two coordinators configured with the same voters share it, whatever the
// order they list them in and whatever their gRPC addresses.
func clusterID(peers []Peer) string {
	lines := make([]string, len(peers))
	for i, p := range peers {
		lines[i] = p.ID + "=" + p.RaftAddr
	}
	slices.Sort(lines)
	sum := sha256.Sum256([]byte(strings.Join(lines, "\n")))
	return hex.EncodeToString(sum[:])
}

// sortedPeers returns a copy of peers sorted by id.
func sortedPeers(peers []Peer) []Peer {
	out := slices.Clone(peers)
	slices.SortFunc(out, func(a, b Peer) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// peerList formats peers as "[a=host:port b=host:port]", sorted by id.
func peerList(peers []Peer) string {
	var b strings.Builder
	b.WriteByte('[')
	for i, p := range sortedPeers(peers) {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(p.ID + "=" + p.RaftAddr)
	}
	b.WriteByte(']')
	return b.String()
}

// checkIdentity compares dir's cluster.json with the configuration. It
// returns write = true when the data dir is new and cluster.json is to be
// written once raft's files are open.
func checkIdentity(dir string, want identity) (write bool, err error) {
	b, err := os.ReadFile(filepath.Join(dir, identityFile))
	if errors.Is(err, fs.ErrNotExist) {
		if _, err := os.Stat(filepath.Join(dir, "raft.db")); err == nil {
			return false, fmt.Errorf("data dir %s holds a raft log (raft.db) but no %s: it is from another cluster or an older Cohort: move it away to start this node afresh", dir, identityFile)
		}
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("reading %s: %w", filepath.Join(dir, identityFile), err)
	}
	var got identity
	if err := json.Unmarshal(b, &got); err != nil {
		return false, fmt.Errorf("data dir %s: %s is unreadable (%v): restore it from a backup, or move the data dir away to start this node afresh", dir, identityFile, err)
	}
	if got.NodeID != want.NodeID {
		return false, fmt.Errorf("data dir %s belongs to node %s; this node is configured as %s: point data_dir at %s's folder", dir, got.NodeID, want.NodeID, want.NodeID)
	}
	if got.ClusterID != want.ClusterID {
		return false, fmt.Errorf("data dir %s was created for peers %s but the config lists %s: restore the old peer list (membership changes are not supported yet), or move %s away to start this node afresh", dir, peerList(got.Peers), peerList(want.Peers), dir)
	}
	return false, nil
}

// writeIdentity writes dir's cluster.json atomically: a temporary file,
// fsync, rename, fsync of the directory.
func writeIdentity(dir string, id identity) error {
	b, err := json.MarshalIndent(id, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding %s: %w", identityFile, err)
	}
	f, err := os.CreateTemp(dir, identityFile+".*.tmp")
	if err != nil {
		return fmt.Errorf("writing %s: %w", identityFile, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // a no-op once renamed
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", identityFile, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", identityFile, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", identityFile, err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, identityFile)); err != nil {
		return fmt.Errorf("writing %s: %w", identityFile, err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("writing %s: %w", identityFile, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("writing %s: syncing %s: %w", identityFile, dir, err)
	}
	return nil
}
