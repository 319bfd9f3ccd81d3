package main

import (
	"context"
	"fmt"
	"io"
	"sync"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	"github.com/cohortfl/cohort/deploy"
	pb "github.com/cohortfl/cohort/proto/cohort/v1"
)

// clusterCmd is `cohort cluster status`: every coordinator of the admin
// kit asked for its own view of the Raft cluster, a row per node.
func clusterCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && isHelp(args[0]) {
		args = []string{"status", "--help"}
	}
	if len(args) == 0 || args[0] != "status" {
		return fmt.Errorf("cluster takes a subcommand: cohort cluster status [-c admin.yaml]")
	}
	a := newAdminFlags("cluster status", "cluster status [-c admin.yaml]", stdout, stderr)
	if err := parseFlags(a.fs, args[1:], stdout); err != nil {
		return err
	}
	cfg, err := deploy.LoadAdminConfig(*a.config)
	if err != nil {
		return err
	}
	dial, err := dialOptions(cfg.TLS)
	if err != nil {
		return err
	}
	// Every node is asked at once: one that is down costs its timeout
	// once, not once per node before it.
	type answer struct {
		st  *pb.ClusterStatusResponse
		err error
	}
	answers := make([]answer, len(cfg.Coordinators))
	var wg sync.WaitGroup
	for i, target := range cfg.Coordinators {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, err := clusterStatus(ctx, target, dial)
			answers[i] = answer{st, err}
		}()
	}
	wg.Wait()
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ADDRESS\tNODE\tSTATE\tTERM\tLAST_INDEX\tCOMMIT\tAPPLIED\tSNAPSHOT\tLEADER\tCONTACT\tJOBS\tSITES")
	answered, leading := 0, 0
	var unreachable []string
	for i, target := range cfg.Coordinators {
		st, err := answers[i].st, answers[i].err
		if err != nil {
			fmt.Fprintf(tw, "%s\t-\tunreachable\t-\t-\t-\t-\t-\t-\t-\t-\t-\n", target)
			unreachable = append(unreachable, fmt.Sprintf("%s: %s", target, status.Convert(err).Message()))
			continue
		}
		answered++
		if s := st.GetState(); s == "leader" || s == "standalone" {
			leading++
		}
		leader := "-"
		if l := st.GetLeader(); l.GetId() != "" {
			leader = l.GetId() + " (" + l.GetGrpcAddress() + ")"
		}
		contact := "-"
		switch ms := st.GetLastContactMs(); {
		case st.GetState() == "leader":
			contact = "self"
		case ms >= 0:
			contact = (time.Duration(ms) * time.Millisecond).String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t%s\t%s\t%d\t%d\n", target, st.GetNodeId(), st.GetState(), st.GetTerm(),
			st.GetLastIndex(), st.GetCommitIndex(), st.GetAppliedIndex(), st.GetLastSnapshotIndex(), leader, contact,
			st.GetJobsRunning(), st.GetSitesConnected())
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, u := range unreachable {
		fmt.Fprintln(stdout, u)
	}
	if answered == 0 {
		return fmt.Errorf("no coordinator of %s answered; check that they run and that coordinators: lists their addresses", *a.config)
	}
	if leading == 0 {
		return fmt.Errorf("no leader: %d of %d coordinators answered and none leads; check that a majority of the cluster's nodes run (a cluster of 3 needs 2) and reach each other on their raft addresses, and read their logs for elections", answered, len(cfg.Coordinators))
	}
	return nil
}

func clusterStatus(ctx context.Context, target string, dial []grpc.DialOption) (*pb.ClusterStatusResponse, error) {
	cc, err := grpc.NewClient(target, dial...)
	if err != nil {
		return nil, err
	}
	defer cc.Close()
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return pb.NewJobsServiceClient(cc).ClusterStatus(rctx, &pb.ClusterStatusRequest{}, grpc.WaitForReady(true))
}
