package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"math"
	"net"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	"github.com/cohortfl/cohort/model"
	pb "github.com/cohortfl/cohort/proto/cohort/v1"
)

// memWeights keeps uploads in memory; aborted counts the uploads dropped.
type memWeights struct {
	mu      sync.Mutex
	m       map[string][]byte
	aborted int
	fail    error // every write fails with it, as a full disk would
}

func (s *memWeights) Create() (WeightsUpload, error) { return &memUpload{s: s}, nil }

type memUpload struct {
	s    *memWeights
	b    bytes.Buffer
	done bool
}

func (u *memUpload) Write(p []byte) (int, error) {
	if u.s.fail != nil {
		return 0, u.s.fail
	}
	return u.b.Write(p)
}

func (u *memUpload) Commit(digest string) error {
	u.s.mu.Lock()
	defer u.s.mu.Unlock()
	u.s.m[digest], u.done = bytes.Clone(u.b.Bytes()), true
	return nil
}

func (u *memUpload) Abort() {
	u.s.mu.Lock()
	defer u.s.mu.Unlock()
	if !u.done {
		u.s.aborted, u.done = u.s.aborted+1, true
	}
}

// serveWeights serves a coordinator that keeps uploads in store over an
// in-memory connection until the test ends, and returns its client.
func serveWeights(tb testing.TB, cfg Config, store WeightsStore) pb.JobsServiceClient {
	tb.Helper()
	coord, err := New(cfg, Deps{OpenTracker: noTrackerOpener, Models: &fakeModels{}, Weights: store})
	if err != nil {
		tb.Fatal(err)
	}
	lis := bufconn.Listen(1 << 20)
	gs := grpc.NewServer(GRPCOptions()...)
	coord.Register(gs)
	go func() { _ = gs.Serve(lis) }()
	cc, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		cc.Close()
		gs.Stop()
		coord.Close()
	})
	return pb.NewJobsServiceClient(cc)
}

func TestUploadWeights(t *testing.T) {
	store := &memWeights{m: map[string][]byte{}}
	cli := serveWeights(t, Config{MaxInitBytes: 1 << 16}, store)

	good, err := model.MarshalSafetensors(initialWeights(), nil)
	if err != nil {
		t.Fatal(err)
	}
	nan := initialWeights()
	nan.Tensors[0].Data[0] = float32(math.NaN())
	bad, err := model.MarshalSafetensors(nan, nil)
	if err != nil {
		t.Fatal(err)
	}
	upload := func(b []byte, size int64, sum []byte) (string, error) {
		st, err := cli.UploadWeights(context.Background())
		if err != nil {
			return "", err
		}
		for off := 0; off < len(b) || off == 0; off += 10 {
			ch := &pb.WeightsChunk{Data: b[off:min(off+10, len(b))]}
			if off == 0 {
				ch.TotalSize, ch.Sha256 = size, sum
			}
			if st.Send(ch) != nil {
				break
			}
		}
		resp, err := st.CloseAndRecv()
		return resp.GetSha256(), err
	}
	sum := func(b []byte) []byte { s := sha256.Sum256(b); return s[:] }

	tests := []struct {
		name string
		b    []byte
		size int64
		sum  []byte
		want string // error substring; "" for success
	}{
		{"good", good, int64(len(good)), sum(good), ""},
		{"too big", good, 1 << 20, sum(good), "outside 1..65536"},
		{"wrong checksum", good, int64(len(good)), sum([]byte("x")), "checksum mismatch"},
		{"not safetensors", []byte("hello world"), 11, sum([]byte("hello world")), "not a safetensors file"},
		{"not finite", bad, int64(len(bad)), sum(bad), "must be finite"},
		{"no checksum", good, int64(len(good)), nil, "must carry the file's SHA-256"},
		{"truncated", good[:len(good)-4], int64(len(good)), sum(good), "truncated"},
		{"bytes after the file", append(bytes.Clone(good), 0, 0), int64(len(good) + 2), sum(append(bytes.Clone(good), 0, 0)), "after the end of the file"},
		{"more than declared", good, int64(len(good) - 4), sum(good), "more data than announced"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := upload(tt.b, tt.size, tt.sum)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("UploadWeights = %v", err)
				}
				if want := hex.EncodeToString(tt.sum); got != want || !bytes.Equal(store.m[want], tt.b) {
					t.Errorf("UploadWeights = %s (stored %v), want %s stored", got, store.m[want] != nil, want)
				}
				return
			}
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(strings.ToLower(err.Error()), strings.ToLower(tt.want)) {
				t.Errorf("UploadWeights = %v, want InvalidArgument containing %q", err, tt.want)
			}
			if tt.sum != nil && !bytes.Equal(tt.sum, sum(good)) && store.m[hex.EncodeToString(tt.sum)] != nil {
				t.Errorf("refused weights were stored under %x", tt.sum)
			}
		})
	}
	// Every upload refused once its bytes began to arrive was dropped.
	if store.aborted != 6 {
		t.Errorf("%d uploads dropped, want 6", store.aborted)
	}
	// A store that cannot write (a full disk) fails the upload as the
	// coordinator's fault, not the file's, and keeps nothing.
	store.fail = errors.New("no space left on device")
	other := sum(append(bytes.Clone(good), 0))
	if _, err := upload(good, int64(len(good)), other); status.Code(err) == codes.InvalidArgument || !strings.Contains(err.Error(), "storing: no space left") {
		t.Errorf("UploadWeights to a full store = %v, want a storing error", err)
	}
	if store.aborted != 7 || len(store.m) != 1 {
		t.Errorf("after the full store: %d dropped, %d kept; want 7, 1", store.aborted, len(store.m))
	}
}

// discardWeights is a store that keeps nothing: what an upload costs the
// coordinator itself.
type discardWeights struct{}

func (discardWeights) Create() (WeightsUpload, error) { return discardUpload{}, nil }

type discardUpload struct{}

func (discardUpload) Write(p []byte) (int, error) { return len(p), nil }
func (discardUpload) Commit(string) error         { return nil }
func (discardUpload) Abort()                      {}

// BenchmarkUploadWeights uploads initial weights of 64 MiB and reports
// what is allocated for each (B/op: the coordinator and, in the same
// process, the uploading client): the upload is checked and stored a
// chunk at a time, so about the chunks' size, not the file's.
//
//	go test -run '^$' -bench UploadWeights -benchmem ./server
func BenchmarkUploadWeights(b *testing.B) {
	w := &model.Weights{Tensors: []model.Tensor{{Name: "w", Shape: []int{16 << 20}, Data: make([]float32, 16<<20)}}}
	file, err := model.MarshalSafetensors(w, nil)
	if err != nil {
		b.Fatal(err)
	}
	sum := sha256.Sum256(file)
	cli := serveWeights(b, Config{}, discardWeights{})
	b.SetBytes(int64(len(file)))
	b.ReportAllocs()
	for b.Loop() {
		st, err := cli.UploadWeights(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		for off := 0; off < len(file); off += model.ChunkSize {
			ch := &pb.WeightsChunk{Data: file[off:min(off+model.ChunkSize, len(file))]}
			if off == 0 {
				ch.TotalSize, ch.Sha256 = int64(len(file)), sum[:]
			}
			if err := st.Send(ch); err != nil {
				b.Fatal(err)
			}
		}
		if _, err := st.CloseAndRecv(); err != nil {
			b.Fatal(err)
		}
	}
}
