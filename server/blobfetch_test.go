package server

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	pb "github.com/cohortfl/cohort/proto/cohort/v1"
	"github.com/cohortfl/cohort/server/blobs"
	"github.com/cohortfl/cohort/server/ha"
)

// fakeHolder records HoldBlob calls and answers err; it stores the
// blobs pushed to it in store.
type fakeHolder struct {
	calls []string
	err   error
	store *blobs.Store
	// received, when set, is sent to when ReceiveBlob returns.
	received chan struct{}
}

func (h *fakeHolder) ReceiveBlob(ctx context.Context, from string, b ha.BlobStream) (blobs.Digest, error) {
	h.calls = append(h.calls, "push from "+from)
	if h.received != nil {
		defer func() { h.received <- struct{}{} }()
	}
	w, err := h.store.Create(ctx)
	if err != nil {
		return "", err
	}
	if _, err := io.Copy(w, b); err != nil {
		_ = w.Abort()
		return "", err
	}
	return w.Commit(b.Digest())
}

func (h *fakeHolder) HoldBlob(_ context.Context, from string, d blobs.Digest, size int64) error {
	h.calls = append(h.calls, from+" "+string(d))
	return h.err
}

// blobPair serves a BlobServer over bufconn and returns a client of it.
func blobPair(t *testing.T, holder BlobHolder) (*blobs.Store, *BlobClient) {
	t.Helper()
	store, err := blobs.Open(t.TempDir(), blobs.Options{MinFree: -1})
	if err != nil {
		t.Fatal(err)
	}
	lis := bufconn.Listen(1 << 20)
	gs := grpc.NewServer()
	pb.RegisterBlobServiceServer(gs, NewBlobServer(store, holder, nil))
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)
	c := NewBlobClient(grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }))
	t.Cleanup(func() { _ = c.Close() })
	return store, c
}

func TestBlobFetchOverGRPC(t *testing.T) {
	ctx := context.Background()
	holder := &fakeHolder{}
	store, c := blobPair(t, holder)
	peer := ha.Peer{ID: "coord-1", GRPCAddr: "passthrough:///bufnet"}
	model := bytes.Repeat([]byte("weights!"), 300_000) // 2.4 MB: three chunks
	w, err := store.Create(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = w.Write(model)
	d, err := w.Commit("")
	if err != nil {
		t.Fatal(err)
	}
	var got bytes.Buffer
	if err := c.FetchBlob(ctx, peer, d, &got); err != nil {
		t.Fatalf("FetchBlob = %v", err)
	}
	if !bytes.Equal(got.Bytes(), model) {
		t.Errorf("FetchBlob copied %d bytes, want the %d stored", got.Len(), len(model))
	}
	missing := blobs.Sum([]byte("not stored"))
	if err := c.FetchBlob(ctx, peer, missing, &got); !errors.Is(err, blobs.ErrNotFound) {
		t.Errorf("FetchBlob of a blob the peer lacks = %v, want ErrNotFound", err)
	}
	if err := c.FetchBlob(ctx, peer, "nothex", &got); status.Code(errors.Unwrap(err)) != codes.InvalidArgument {
		t.Errorf("FetchBlob of a malformed digest = %v, want InvalidArgument", err)
	}
	if err := c.HoldBlob(ctx, peer, ha.Peer{ID: "coord-2"}, d, int64(len(model))); err != nil {
		t.Fatalf("HoldBlob = %v", err)
	}
	if want := "coord-2 " + string(d); len(holder.calls) != 1 || holder.calls[0] != want {
		t.Errorf("holder calls = %q, want [%q]", holder.calls, want)
	}
	holder.err = blobs.ErrNoSpace
	if err := c.HoldBlob(ctx, peer, ha.Peer{ID: "coord-2"}, d, 1); status.Code(errors.Unwrap(err)) != codes.ResourceExhausted {
		t.Errorf("HoldBlob on a full disk = %v, want ResourceExhausted", err)
	}
}

// pushStream is an ha.BlobStream of fixed bytes, then a digest.
type pushStream struct {
	io.Reader
	d blobs.Digest
}

func (s pushStream) Digest() blobs.Digest { return s.d }

type failingReader struct{ err error }

func (r failingReader) Read([]byte) (int, error) { return 0, r.err }

// TestBlobPushOverGRPC: PushBlob stores what the leader streams, in
// chunks, against the digest that ends it; altered bytes are refused
// with DataLoss and a push broken off stores nothing.
func TestBlobPushOverGRPC(t *testing.T) {
	model := bytes.Repeat([]byte("weights!"), 300_000) // 2.4 MB: three chunks
	cause := errors.New("the leader's write failed")
	tests := []struct {
		name     string
		stream   ha.BlobStream
		wantCode codes.Code
		wantErr  error // matched with errors.Is, besides the code
		stored   bool
	}{
		{"pushed", pushStream{bytes.NewReader(model), blobs.Sum(model)}, codes.OK, nil, true},
		{"digest mismatch", pushStream{bytes.NewReader(model), blobs.Sum([]byte("other"))}, codes.DataLoss, nil, false},
		{"malformed digest", pushStream{bytes.NewReader(model), "nothex"}, codes.InvalidArgument, nil, false},
		{"broken off by the leader", pushStream{io.MultiReader(bytes.NewReader(model), failingReader{cause}), blobs.Sum(model)}, codes.Unknown, cause, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			holder := &fakeHolder{received: make(chan struct{}, 1)}
			store, c := blobPair(t, holder)
			holder.store = store
			to := ha.Peer{ID: "coord-2", GRPCAddr: "passthrough:///bufnet"}
			err := c.PushBlob(ctx, to, ha.Peer{ID: "coord-1"}, tt.stream)
			switch {
			case tt.wantErr != nil:
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("PushBlob = %v, want %v", err, tt.wantErr)
				}
			case status.Code(errors.Unwrap(err)) != tt.wantCode:
				t.Fatalf("PushBlob = %v, want code %v", err, tt.wantCode)
			}
			<-holder.received // the handler has returned, also after a cancelled push
			if got := store.Has(blobs.Sum(model)); got != tt.stored {
				t.Errorf("the callee holds the model = %v, want %v", got, tt.stored)
			}
			if !tt.stored && store.Size() != 0 {
				t.Errorf("the callee's store holds %d bytes after a refused push, want 0", store.Size())
			}
		})
	}
}

// fakePushStream is the server side of a PushBlob stream that receives
// msgs.
type fakePushStream struct {
	grpc.ServerStream
	msgs []*pb.PushBlobRequest
}

func (f *fakePushStream) Recv() (*pb.PushBlobRequest, error) {
	m := new(pb.PushBlobRequest)
	return m, f.RecvMsg(m)
}

// RecvMsg decodes the next message into m the way the bulk codec does:
// into m's own data array where it is large enough, so a reader that kept
// the last message's bytes sees them overwritten.
func (f *fakePushStream) RecvMsg(m any) error {
	if len(f.msgs) == 0 {
		return io.EOF
	}
	dst := m.(*pb.PushBlobRequest)
	next := f.msgs[0]
	f.msgs = f.msgs[1:]
	dst.Data = append(dst.Data[:0], next.Data...)
	dst.Digest = next.Digest
	return nil
}

func (f *fakePushStream) SendAndClose(*pb.PushBlobResponse) error { return nil }

// FuzzPushReader: the pushReader decodes a PushBlob stream cut anywhere
// into the bytes sent and the digest that ends it, by Read and by
// WriteTo alike, and a stream without a digest into errPushTruncated.
func FuzzPushReader(f *testing.F) {
	f.Add([]byte("weights"), []byte{3, 0, 4}, true)
	f.Add([]byte{}, []byte{}, false)
	f.Add(bytes.Repeat([]byte{7}, 1000), []byte{255, 1}, true)
	f.Fuzz(func(t *testing.T, data, cuts []byte, withDigest bool) {
		d := blobs.Sum(data)
		var msgs []*pb.PushBlobRequest
		rest := data
		for _, c := range cuts {
			n := min(int(c), len(rest))
			msgs = append(msgs, &pb.PushBlobRequest{Data: rest[:n]})
			rest = rest[n:]
		}
		last := &pb.PushBlobRequest{Data: rest}
		if withDigest {
			last.Digest = string(d)
		}
		msgs = append(msgs, last)
		for _, byWriteTo := range []bool{false, true} {
			r := &pushReader{stream: &fakePushStream{msgs: append([]*pb.PushBlobRequest(nil), msgs[1:]...)}}
			r.take(msgs[0])
			var got bytes.Buffer
			var err error
			if byWriteTo {
				_, err = r.WriteTo(&got)
			} else {
				_, err = io.Copy(&got, struct{ io.Reader }{r})
			}
			if !withDigest {
				if !errors.Is(err, errPushTruncated) {
					t.Fatalf("reading a push without a digest (WriteTo %v) = %v, want errPushTruncated", byWriteTo, err)
				}
				continue
			}
			if err != nil || !bytes.Equal(got.Bytes(), data) || r.Digest() != d {
				t.Fatalf("reading a push (WriteTo %v) = %d bytes, digest %.12s, %v; want %d, %.12s, nil", byWriteTo, got.Len(), r.Digest(), err, len(data), d)
			}
		}
	})
}
