package server

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
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

type memWeights struct {
	mu sync.Mutex
	m  map[string][]byte
}

func (s *memWeights) Put(digest string, b []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m[digest] = append([]byte(nil), b...)
	return nil
}

func TestUploadWeights(t *testing.T) {
	store := &memWeights{m: map[string][]byte{}}
	noTracker := func(context.Context, string) (Tracker, func(context.Context) error, error) { return nil, nil, nil }
	coord, err := New(Config{MaxInitBytes: 1 << 16}, Deps{OpenTracker: noTracker, Models: &fakeModels{}, Weights: store})
	if err != nil {
		t.Fatal(err)
	}
	defer coord.Close()
	lis := bufconn.Listen(1 << 20)
	gs := grpc.NewServer()
	coord.Register(gs)
	go func() { _ = gs.Serve(lis) }()
	defer gs.Stop()
	cc, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	cli := pb.NewJobsServiceClient(cc)

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
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := upload(tt.b, tt.size, tt.sum)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("UploadWeights = %v", err)
				}
				if want := hex.EncodeToString(tt.sum); got != want || store.m[want] == nil {
					t.Errorf("UploadWeights = %s (stored %v), want %s stored", got, store.m[want] != nil, want)
				}
				return
			}
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(strings.ToLower(err.Error()), strings.ToLower(tt.want)) {
				t.Errorf("UploadWeights = %v, want InvalidArgument containing %q", err, tt.want)
			}
		})
	}
}
