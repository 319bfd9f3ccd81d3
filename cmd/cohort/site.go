package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/cohortfl/cohort/client"
	"github.com/cohortfl/cohort/deploy"
	pb "github.com/cohortfl/cohort/proto/cohort/v1"
	"github.com/cohortfl/cohort/train"
)

func siteCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("site", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("c", "site.yaml", "the site's config file (from its startup kit)")
	level := fs.String("log-level", "", "log level: debug, info, warn, error (default: the config's log.level)")
	format := fs.String("log-format", "", "log format: text or json (default: the config's log.format)")
	drain := fs.Duration("drain-timeout", client.DefaultDrainTimeout, "on SIGTERM or Ctrl-C, how long the tasks in flight have to finish and upload their updates before they are cancelled (0: cancel at once)")
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return fmt.Errorf("site takes no arguments, got %q; the config file goes after -c", fs.Args())
	}
	if *drain < 0 {
		return fmt.Errorf("--drain-timeout %s is negative; give a duration such as 60s, or 0 to cancel tasks at once", *drain)
	}
	if *drain == 0 {
		*drain = -1 // client.Config: negative cancels at once, zero is the default
	}
	cfg, err := deploy.LoadSiteConfig(*path)
	if err != nil {
		return err
	}
	log, err := newLogger(stderr, pick(*level, cfg.Log.Level), pick(*format, cfg.Log.Format))
	if err != nil {
		return err
	}
	log = log.With("site", cfg.Name)

	if v, ok := placeGPUs(cfg.GPUs, os.Setenv); ok {
		log.Info("gpus", "cuda_visible_devices", v)
	}
	dial, err := dialOptions(cfg.TLS)
	if err != nil {
		return err
	}
	if cfg.TLS == nil {
		log.Warn("plaintext_on_loopback", "coordinators", cfg.Coordinators, "hint", "use a startup kit's certificate for anything but a demo")
	}
	trainers := &train.Factory{Dir: cfg.Exec.Workdir, Logger: log.With("component", "trainer")}
	if !cfg.Exec.Allow {
		trainers.ExecRefused = "this site does not run job commands; set exec: {allow: true} in site.yaml to let jobs run their trainer here"
	}
	defer trainers.Close()
	siteMeter, _, closeMeter := newMeter(log)
	defer closeMeter()
	caps := &pb.Capabilities{Trainers: []string{"logreg", "mlp", "cnn", train.TransferKind}, EnergySources: []string{"estimate"}}
	if cfg.Exec.Allow {
		caps.Trainers = append(caps.Trainers, "exec")
	}
	a, err := client.New(client.Config{
		Name: cfg.Name, Targets: cfg.Coordinators, DialOptions: dial, Version: version,
		Capabilities: caps, Logger: log, DrainTimeout: *drain,
	}, &client.LocalData{Paths: cfg.Data, Site: cfg.Name, Logger: log}, trainers, siteMeter)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "site %s: dialling %s (tls: %v)\n", cfg.Name, strings.Join(cfg.Coordinators, ", "), cfg.TLS != nil)
	return a.Run(ctx)
}

// dialOptions returns how a site or admin reaches its coordinators: mutual
// TLS from its kit, or plaintext (which the config allows for loopback
// coordinators only).
func dialOptions(files *deploy.TLSFiles) ([]grpc.DialOption, error) {
	if files == nil {
		return []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, nil
	}
	// The server name is taken from each target by grpc when ServerName
	// is empty, so one config serves every coordinator of the list.
	tc, err := files.ClientConfig("")
	if err != nil {
		return nil, err
	}
	return []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(tc))}, nil
}

// placeGPUs confines the site to the GPUs its config lists: the trainers
// this process starts and the energy meter both read CUDA_VISIBLE_DEVICES,
// so setting it once places training on exactly those devices and meters
// exactly them. A nil list leaves the environment as it is (every GPU);
// an empty one hides them all.
func placeGPUs(gpus []int, setenv func(k, v string) error) (string, bool) {
	if gpus == nil {
		return "", false
	}
	ids := make([]string, len(gpus))
	for i, g := range gpus {
		ids[i] = strconv.Itoa(g)
	}
	v := strings.Join(ids, ",")
	_ = setenv("CUDA_VISIBLE_DEVICES", v)
	return v, true
}
