package server

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	pb "github.com/cohortfl/cohort/proto/cohort/v1"
)

// TestMaxConcurrentUpdatesHoldsUploadsBack holds the only receiving slot
// while three sites push: their uploads wait (the hook sees one) and,
// once the slot is free, are received one at a time and the job ends as
// it would unbounded.
func TestMaxConcurrentUpdatesHoldsUploadsBack(t *testing.T) {
	c := newCluster(t)
	waiting := make(chan struct{})
	var once sync.Once
	c.coord.updateSlots = make(chan struct{}, 1)
	c.coord.updateWaiting = func() { once.Do(func() { close(waiting) }) }
	c.coord.updateSlots <- struct{}{} // held by the test
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for i := 1; i <= 3; i++ {
		c.startSite(t, ctx, &fakeSite{name: fmt.Sprintf("site-%d", i), update: plusOne(100)})
	}
	j := submit(t, c, fmt.Sprintf(testJob, 3, "30s"))
	<-waiting // an upload waits for the slot the test holds
	<-c.coord.updateSlots
	got := waitJob(t, c, j.GetJobId())
	if got.GetState() != pb.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("job state = %v (%s), want SUCCEEDED", got.GetState(), got.GetError())
	}
	if v := c.models.last().Tensors[0].Data[0]; v != 3 {
		t.Errorf("global weight after 3 rounds = %v, want 3", v)
	}
	if n := len(c.coord.updateSlots); n != 0 {
		t.Errorf("%d receiving slots still held after the job, want 0", n)
	}
}

// TestUpdateSlotGivesUpWithTheCaller checks that an upload waiting for a
// slot stops when its call is cancelled, holding nothing.
func TestUpdateSlotGivesUpWithTheCaller(t *testing.T) {
	c := &Coordinator{updateSlots: make(chan struct{}, 1)}
	release, err := c.updateSlot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c.updateWaiting = cancel
	if _, err := c.updateSlot(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("updateSlot(cancelled while waiting) = %v, want context.Canceled", err)
	}
	release()
	release() // a second release frees nothing more
	if n := len(c.updateSlots); n != 0 {
		t.Errorf("%d slots held after release, want 0", n)
	}
	if _, err := (&Coordinator{}).updateSlot(context.Background()); err != nil {
		t.Errorf("updateSlot without a bound = %v, want nil", err)
	}
}
