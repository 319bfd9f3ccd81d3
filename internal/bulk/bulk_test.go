package bulk

import (
	"bytes"
	"errors"
	"io"
	"net"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	pb "github.com/cohortfl/cohort/proto/cohort/v1"
)

// pieces splits b into buffers of the given sizes in turn, as the
// transport hands a message over in frames.
func pieces(b []byte, sizes ...int) mem.BufferSlice {
	var s mem.BufferSlice
	for i := 0; len(b) > 0; i++ {
		n := min(max(sizes[i%len(sizes)], 1), len(b))
		s = append(s, mem.SliceBuffer(bytes.Clone(b[:n])))
		b = b[n:]
	}
	return s
}

func payload(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + 3)
	}
	return b
}

func TestRoundTrip(t *testing.T) {
	big := payload(3 << 20)
	tests := []struct {
		name string
		msg  proto.Message
		// direct: the encoding carries the sender's slice
		direct bool
	}{
		{"model chunk", &pb.ModelChunk{Offset: 1 << 30, Data: big, TotalSize: 5 << 30, Sha256: payload(32)}, true},
		{"update data", &pb.UpdateChunk{Msg: &pb.UpdateChunk_Data{Data: big}}, true},
		{"update header", &pb.UpdateChunk{Msg: &pb.UpdateChunk_Header{Header: &pb.UpdateHeader{TaskId: "t", Sha256: payload(32), Metrics: map[string]float64{"acc": 0.5}}}}, false},
		{"blob push", &pb.PushBlobRequest{FromNode: "n1", Size: 7, Data: big, Digest: "ab"}, true},
		{"small chunk", &pb.ModelChunk{Offset: 3, Data: payload(100)}, false},
		{"empty", &pb.ModelChunk{}, false},
		{"no bytes fields", &pb.FetchModelRequest{ModelId: "m", TaskId: "t"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := proto.Clone(tt.msg)
			enc, err := Codec{}.Marshal(tt.msg)
			if err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(tt.msg, before) {
				t.Fatal("Marshal changed the message it sent")
			}
			wire := enc.Materialize()
			std, err := proto.Marshal(tt.msg)
			if err != nil {
				t.Fatal(err)
			}
			if len(wire) != len(std) {
				t.Errorf("encoding of %d bytes, protobuf's %d", len(wire), len(std))
			}
			if got := len(enc) == 2 && &enc[1].ReadOnlyData()[0] == &big[0]; got != tt.direct {
				t.Errorf("the encoding shares the sender's slice: %v, want %v", got, tt.direct)
			}
			// Protobuf reads what the codec wrote, and the codec reads it
			// back from frames of any size.
			viaProto := tt.msg.ProtoReflect().New().Interface()
			if err := proto.Unmarshal(wire, viaProto); err != nil {
				t.Fatalf("protobuf cannot read the encoding: %v", err)
			}
			if !proto.Equal(viaProto, tt.msg) {
				t.Fatal("protobuf reads another message from the encoding")
			}
			for _, sizes := range [][]int{{len(wire)}, {16 << 10}, {1, 2, 3, 5000}, {7}} {
				got := tt.msg.ProtoReflect().New().Interface()
				if err := (Codec{}).Unmarshal(pieces(wire, sizes...), got); err != nil {
					t.Fatalf("frames of %v: %v", sizes, err)
				}
				if !proto.Equal(got, tt.msg) {
					t.Fatalf("frames of %v: read another message", sizes)
				}
			}
		})
	}
}

// TestUnmarshalOrder: fields in any order and repeated, and oneof members
// replacing each other, read as protobuf reads them.
func TestUnmarshalOrder(t *testing.T) {
	big := payload(100 << 10)
	var b []byte
	b = protowire.AppendTag(b, 2, protowire.BytesType)
	b = protowire.AppendBytes(b, payload(70<<10)) // replaced by the later data
	b = protowire.AppendTag(b, 3, protowire.VarintType)
	b = protowire.AppendVarint(b, 9)
	b = protowire.AppendTag(b, 2, protowire.BytesType)
	b = protowire.AppendBytes(b, big)
	b = protowire.AppendTag(b, 1, protowire.VarintType)
	b = protowire.AppendVarint(b, 4)
	b = protowire.AppendTag(b, 99, protowire.BytesType) // unknown: kept
	b = protowire.AppendBytes(b, payload(80<<10))
	var want, got pb.ModelChunk
	if err := proto.Unmarshal(b, &want); err != nil {
		t.Fatal(err)
	}
	if err := (Codec{}).Unmarshal(pieces(b, 16<<10), &got); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(&got, &want) || !bytes.Equal(got.Data, big) || got.Offset != 4 || got.TotalSize != 9 {
		t.Fatalf("got offset %d total %d data %d bytes, want protobuf's", got.Offset, got.TotalSize, len(got.Data))
	}

	// A header after the data replaces it, as in protobuf.
	var u []byte
	u = protowire.AppendTag(u, 2, protowire.BytesType)
	u = protowire.AppendBytes(u, big)
	u = protowire.AppendTag(u, 1, protowire.BytesType)
	h, _ := proto.Marshal(&pb.UpdateHeader{TaskId: "t"})
	u = protowire.AppendBytes(u, h)
	var uc pb.UpdateChunk
	if err := (Codec{}).Unmarshal(pieces(u, 4096), &uc); err != nil {
		t.Fatal(err)
	}
	if uc.GetHeader().GetTaskId() != "t" || uc.GetData() != nil {
		t.Fatalf("got %v, want the header, which came last", &uc)
	}
}

// TestUnmarshalMalformed: what protobuf refuses, the codec refuses.
func TestUnmarshalMalformed(t *testing.T) {
	ok := protowire.AppendBytes(protowire.AppendTag(nil, 3, protowire.BytesType), payload(70<<10)) // PushBlobRequest.data
	tests := map[string][]byte{
		"truncated data":    ok[:len(ok)-1],
		"length past end":   append(protowire.AppendVarint(protowire.AppendTag(nil, 3, protowire.BytesType), 1<<40), payload(70<<10)...),
		"field number zero": append(protowire.AppendTag(nil, 0, protowire.VarintType), ok...),
		"wire type 7":       append([]byte{0x0f}, ok...),
		"varint too long":   append(ok, 0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02),
		"bad utf-8 after":   append(ok, append(protowire.AppendTag(nil, 1, protowire.BytesType), 1, 0xff)...),
	}
	for name, b := range tests {
		t.Run(name, func(t *testing.T) {
			var m pb.PushBlobRequest
			if proto.Unmarshal(b, &m) == nil {
				t.Fatal("protobuf reads it: the case is not malformed")
			}
			if err := (Codec{}).Unmarshal(pieces(b, 1000), &m); err == nil {
				t.Fatal("read a message protobuf refuses")
			}
		})
	}
}

// FuzzUnmarshal: whatever the bytes and however they are framed, the
// codec reads what protobuf reads, or refuses what it refuses.
func FuzzUnmarshal(f *testing.F) {
	for _, m := range []proto.Message{
		&pb.ModelChunk{Offset: 1, Data: payload(40), TotalSize: 2, Sha256: payload(32)},
		&pb.UpdateChunk{Msg: &pb.UpdateChunk_Data{Data: payload(30)}},
		&pb.UpdateChunk{Msg: &pb.UpdateChunk_Header{Header: &pb.UpdateHeader{TaskId: "t", NumSamples: 3}}},
		&pb.PushBlobRequest{FromNode: "a", Data: payload(20), Digest: "d"},
	} {
		b, _ := proto.Marshal(m)
		f.Add(b, uint8(5), uint16(7))
	}
	f.Fuzz(func(t *testing.T, b []byte, threshold uint8, frame uint16) {
		c := Codec{threshold: int(threshold%32) + 1}
		for _, newMsg := range []func() proto.Message{
			func() proto.Message { return &pb.ModelChunk{} },
			func() proto.Message { return &pb.UpdateChunk{} },
			func() proto.Message { return &pb.PushBlobRequest{} },
		} {
			want, got := newMsg(), newMsg()
			werr := proto.Unmarshal(b, want)
			gerr := c.Unmarshal(pieces(b, int(frame%64)+1, 3), got)
			if (werr == nil) != (gerr == nil) {
				t.Fatalf("%T: protobuf's error %v, the codec's %v", want, werr, gerr)
			}
			if werr == nil && !proto.Equal(got, want) {
				t.Fatalf("%T: read %v, protobuf %v", want, got, want)
			}
		}
	})
}

// countingBuffers counts the buffers given back.
type countingBuffers struct {
	Buffers
	mu  sync.Mutex
	put int
}

func (c *countingBuffers) Put(p *[]byte) {
	c.mu.Lock()
	c.put++
	c.mu.Unlock()
	c.Buffers.Put(p)
}

// echoDesc is a service of one bidirectional method that sends back each
// ModelChunk it receives, for the test over real gRPC.
var echoDesc = grpc.ServiceDesc{
	ServiceName: "bulktest.Echo",
	HandlerType: (*any)(nil),
	Streams: []grpc.StreamDesc{{
		StreamName: "Echo", ServerStreams: true, ClientStreams: true,
		Handler: func(_ any, stream grpc.ServerStream) error {
			var m pb.ModelChunk // received into again
			for {
				if err := stream.RecvMsg(&m); err != nil {
					if errors.Is(err, io.EOF) {
						return nil
					}
					return err
				}
				// Sent from a pooled copy: the next receive reuses m's array.
				buf := serverBuffers.Get(len(m.Data))
				copy(*buf, m.Data)
				out := &pb.ModelChunk{Offset: m.Offset, Data: *buf, Sha256: m.Sha256}
				if err := stream.SendMsg(Owned(out, &serverBuffers)); err != nil {
					return err
				}
			}
		},
	}},
}

var serverBuffers countingBuffers

// TestOverGRPC sends chunks over loopback gRPC between peers with and
// without the codec: every pairing carries every byte, a buffer sent from
// the pool goes back to it, and a message received into again keeps its
// array.
func TestOverGRPC(t *testing.T) {
	for _, tt := range []struct {
		name                     string
		serverCodec, clientCodec bool
	}{{"both", true, true}, {"server only", true, false}, {"client only", false, true}} {
		t.Run(tt.name, func(t *testing.T) {
			var srvOpts []grpc.ServerOption
			if tt.serverCodec {
				srvOpts = append(srvOpts, ServerOption())
			}
			gs := grpc.NewServer(srvOpts...)
			gs.RegisterService(&echoDesc, nil)
			lis, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			go func() { _ = gs.Serve(lis) }()
			defer gs.Stop()
			dial := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
			if tt.clientCodec {
				dial = append(dial, DialOption())
			}
			cc, err := grpc.NewClient(lis.Addr().String(), dial...)
			if err != nil {
				t.Fatal(err)
			}
			defer cc.Close()
			stream, err := cc.NewStream(t.Context(), &echoDesc.Streams[0], "/bulktest.Echo/Echo")
			if err != nil {
				t.Fatal(err)
			}
			serverBuffers.mu.Lock()
			putBefore := serverBuffers.put
			serverBuffers.mu.Unlock()

			const chunks = 20
			var clientBuffers countingBuffers
			var got pb.ModelChunk
			var arrays = map[*byte]bool{}
			for i := range chunks {
				buf := clientBuffers.Get(Threshold + (chunks-i)*1000) // smaller each time: the receiver's array fits the next
				for j := range *buf {
					(*buf)[j] = byte(i + j)
				}
				want := bytes.Clone(*buf)
				if err := stream.SendMsg(Owned(&pb.ModelChunk{Offset: int64(i), Data: *buf, Sha256: payload(32)}, &clientBuffers)); err != nil {
					t.Fatal(err)
				}
				if err := stream.RecvMsg(&got); err != nil {
					t.Fatal(err)
				}
				if got.Offset != int64(i) || !bytes.Equal(got.Data, want) || !bytes.Equal(got.Sha256, payload(32)) {
					t.Fatalf("chunk %d came back changed (offset %d, %d bytes)", i, got.Offset, len(got.Data))
				}
				arrays[&got.Data[:1][0]] = true
			}
			if err := stream.CloseSend(); err != nil {
				t.Fatal(err)
			}
			if err := stream.RecvMsg(&got); !errors.Is(err, io.EOF) {
				t.Fatalf("end of stream: %v", err)
			}
			// Each side's codec gives its sent buffers back (the other
			// side's protobuf codec copies them and leaves them to the
			// collector); a receive into the same message reuses its array
			// as long as it is large enough. Closing the connection and
			// the server waits for their writers, which give them back.
			cc.Close()
			clientBuffers.mu.Lock()
			if want := map[bool]int{true: chunks, false: 0}[tt.clientCodec]; clientBuffers.put != want {
				t.Errorf("client: %d buffers given back, want %d", clientBuffers.put, want)
			}
			clientBuffers.mu.Unlock()
			gs.GracefulStop()
			serverBuffers.mu.Lock()
			if want := map[bool]int{true: chunks, false: 0}[tt.serverCodec]; serverBuffers.put-putBefore != want {
				t.Errorf("server: %d buffers given back, want %d", serverBuffers.put-putBefore, want)
			}
			serverBuffers.mu.Unlock()
			if tt.clientCodec && len(arrays) == chunks {
				t.Errorf("every chunk arrived in an array of its own: the receive did not reuse the message's")
			}
			if !tt.clientCodec && len(arrays) != chunks {
				t.Errorf("protobuf reused an array")
			}
		})
	}
}
