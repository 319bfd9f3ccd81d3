package server

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	pb "github.com/cohortfl/cohort/proto/cohort/v1"
	"github.com/cohortfl/cohort/server/round"
	"github.com/cohortfl/cohort/tracking"
)

// A worker of virtual clients that fails mid-round (it reports an error,
// its session drops, or its task cannot be sent) does not take its slice
// of the round's sample with it: the slice goes to a surviving worker of
// the same round, as a fresh task on the round's global model, and that
// task's update answers for the dead worker's slot in the round. The
// round's state machine never sees the failure; it sees the slot answer.
// Each worker trains its clients from the same model with seeds drawn
// from their ids, so the slice's update is the one the dead worker would
// have sent, and the round's aggregate is the one of a round where no
// worker died (up to the order the coordinator folds the updates in).
//
// A slot is reassigned at most once per other worker of the round, never
// to a worker that failed in it; when none is left the slot fails with a
// reason naming the workers, and the round with it.

// virtualRescue tracks which task answers for each worker's slice of a
// virtual-clients round. Its zero value is ready to use.
type virtualRescue struct {
	// slotOf maps the id of a task that trains another worker's slice to
	// that worker (the slot it answers for).
	slotOf map[string]string
	// dead are the workers that failed in the round, with why.
	dead map[string]string
	// moves counts each slot's reassignments.
	moves map[string]int
	// answered are the slots whose update arrived.
	answered map[string]bool
	// extra counts the slices each worker trains beside its own.
	extra map[string]int
	// retired are the tasks whose slices went to another worker: what
	// they send late is dropped, and the round closes them at its end.
	retired []*pendingTask
	// lost is the reason of the last slot no worker was left for.
	lost string
}

func (v *virtualRescue) init() {
	if v.slotOf == nil {
		v.slotOf = make(map[string]string)
		v.dead = make(map[string]string)
		v.moves = make(map[string]int)
		v.answered = make(map[string]bool)
		v.extra = make(map[string]int)
	}
}

// retiredIDs returns the ids of the tasks whose slices went elsewhere.
func (v *virtualRescue) retiredIDs() []string {
	ids := make([]string, len(v.retired))
	for i, t := range v.retired {
		ids[i] = t.id
	}
	return ids
}

// rescues reports whether the round trains virtual clients, whose slices
// can move between workers.
func (x *roundExec) rescues() bool {
	return x.a.j.spec.Sites.Virtual > 0 && x.a.kind == pb.TaskKind_TASK_KIND_TRAIN
}

// reroute looks at an event of a virtual-clients round before the round
// handles it. An event of a task that trains another worker's slice is
// rewritten to name that worker's slot; a failure of the task a slot
// awaits moves the slice to a surviving worker and is consumed; an event
// of a task whose slice went elsewhere is dropped. It reports whether it
// consumed ev.
func (x *roundExec) reroute(ev *roundEvent) bool {
	if !x.rescues() {
		return false
	}
	v := &x.virt
	v.init()
	slot, moved := v.slotOf[ev.taskID]
	if !moved {
		slot = ev.site
	}
	if t := x.tasks[slot]; t == nil || t.id != ev.taskID {
		x.dropRetired(ev)
		return true
	}
	worker := ev.site
	ev.site = slot
	switch ev.kind {
	case evUpdate:
		v.answered[slot] = true
		if moved { // the slot's site run says whose update it logs
			m := maps.Clone(ev.update.metrics)
			if m == nil {
				m = make(map[string]float64, 1)
			}
			m[tracking.MetricVirtualReassigned] = float64(len(splitClients(x.sample, x.sm.Selected(), slot)))
			ev.update.metrics = m
		}
	case evFailed, evDisconnected:
		if v.answered[slot] || !x.awaits(slot) {
			return false // the round has the update, or no longer waits; it decides
		}
		reason := ev.reason
		if ev.kind == evDisconnected {
			reason = "disconnected: " + reason
		}
		x.wasted(ev.energy) // the failed task's work is lost
		ev.energy = nil
		if x.reassign(slot, worker, reason) {
			return true
		}
		// No worker is left: the slot fails, with the reason why.
		ev.kind, ev.reason = evFailed, v.lost
	}
	return false
}

// awaits reports whether the round still waits for slot's update and has
// time left to train its clients elsewhere.
func (x *roundExec) awaits(slot string) bool {
	return time.Now().Before(x.sm.Deadline()) && slices.Contains(x.sm.Pending(), slot)
}

// dropRetired answers what a task whose slice went to another worker
// sends late: an update is refused and its work counted as wasted.
func (x *roundExec) dropRetired(ev *roundEvent) {
	switch ev.kind {
	case evUpdate:
		x.wasted(ev.update.energy)
		x.wasted(ev.update.evalEnergy)
		ev.update.discard()
		ev.reply <- fmt.Errorf("%w: round %d of %s gave this task's virtual clients to another worker after the task failed",
			ErrStaleRound, x.r, x.a.arm.Name)
	case evFailed, evRejected:
		x.wasted(ev.energy)
	}
}

// wasted counts a report, if any, as wasted work.
func (x *roundExec) wasted(r *pb.EnergyReport) {
	if r != nil {
		x.energy.addReport(purposeWasted, r)
	}
}

// sendFailed handles a task that could not be sent to site: in a
// virtual-clients round its slice goes to another worker; otherwise, or
// when none is left, the site fails in the round.
func (x *roundExec) sendFailed(site string, err error) {
	reason := err.Error()
	if x.rescues() {
		x.virt.init()
		if x.reassign(site, site, "task not sent: "+reason) {
			return
		}
		reason = x.virt.lost
	}
	x.queue = append(x.queue, round.SiteFailed{Site: site, Reason: reason})
}

// reassign gives slot's slice, whose task on worker failed for reason, to
// the least loaded surviving worker of the round (the first in name order
// among equals), and reports whether one took it. When none is left it
// sets x.virt.lost.
func (x *roundExec) reassign(slot, worker, reason string) bool {
	c, a, v := x.c, x.a, &x.virt
	v.dead[worker] = reason
	workers := x.sm.Selected()
	n := len(splitClients(x.sample, workers, slot))
	old := x.tasks[slot]
	for v.moves[slot] < len(workers)-1 {
		helper := v.helper(workers)
		if helper == "" {
			break
		}
		v.moves[slot]++
		if err := x.sendTask(helper, slot); err != nil {
			v.dead[helper] = "task not sent: " + err.Error()
			v.retired = append(v.retired, x.tasks[slot])
			continue
		}
		if old != nil {
			v.retired = append(v.retired, old)
		}
		v.slotOf[x.tasks[slot].id] = slot
		v.extra[helper]++
		c.log.Warn("virtual_clients_reassigned", "job", a.j.id, "arm", a.arm.Name, "round", x.r,
			"worker", worker, "slot", slot, "clients", n, "to", helper, "reassignment", v.moves[slot], "reason", reason)
		whose := "its"
		if slot != worker {
			whose = slot + "'s"
		}
		a.j.emit(&pb.JobEvent{Kind: "virtual_reassigned", Arm: a.arm.Name, Round: int32(x.r), Site: slot,
			Message: fmt.Sprintf("%s round %d: %s failed (%s); %s %d virtual clients went to %s",
				a.arm.Name, x.r, worker, reason, whose, n, helper),
			Metrics: map[string]float64{tracking.MetricVirtualReassigned: float64(n)}}, nil)
		return true
	}
	if old != nil && x.tasks[slot] != old { // the last try was not sent
		x.tasks[slot] = old
	}
	v.lost = fmt.Sprintf("no worker is left to train %s's slice of %d virtual clients: every worker of round %d failed (%s); restart the workers (cohort site) or start more (sites.workers), then resubmit the job",
		slot, n, x.r, v.deadList(workers))
	return false
}

// helper returns the worker, among workers (in name order), that takes a
// slice next: of those that have not failed in the round, the one with
// the fewest extra slices, the first in name order among equals; "" when
// every worker has failed.
func (v *virtualRescue) helper(workers []string) string {
	helper := ""
	for _, w := range workers {
		if _, gone := v.dead[w]; !gone && (helper == "" || v.extra[w] < v.extra[helper]) {
			helper = w
		}
	}
	return helper
}

// deadList says, in name order, which workers failed and why.
func (v *virtualRescue) deadList(workers []string) string {
	var parts []string
	for _, w := range slices.Sorted(slices.Values(workers)) {
		if why, ok := v.dead[w]; ok {
			parts = append(parts, w+": "+why)
		}
	}
	return strings.Join(parts, "; ")
}

// virtualFailure adds to a failed round's error why its virtual clients
// could not all be trained, when that is why it failed.
func (x *roundExec) virtualFailure(err error) error {
	if err == nil || x.virt.lost == "" {
		return err
	}
	return fmt.Errorf("%w: %s", err, x.virt.lost)
}
