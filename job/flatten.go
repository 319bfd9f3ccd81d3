package job

import (
	"encoding/json"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Flatten returns the spec as dotted keys (the YAML key paths, list items by
// 0-based index) to string values, for the job run's tracking params:
// "train.lr" → "0.05", "arms.2.strategy.mu" → "0.01", "model.hidden" →
// "[200]". Settings that do not apply are left out (model.conv for an mlp,
// strategy.mu for fedavg, data.synthetic for Fashion-MNIST, strategy.clip.norm
// with clip mode off). Simulated adversaries appear as
// "sites.adversaries.0.attacks.1.factor". Two values are
// redacted because jobs are shared: a password in tracking.uri is replaced by
// "xxxxx", and model.env lists the variables' names only, since their values
// often carry tokens. Arm train overrides appear as written
// ("arms.1.train.lr"); the effective settings are [Spec.ArmTrain].
func (s *Spec) Flatten() map[string]string {
	m := map[string]string{}
	str := func(k, v string) { m[k] = v }
	num := func(k string, v int) { m[k] = strconv.Itoa(v) }
	flt := func(k string, v float64) { m[k] = strconv.FormatFloat(v, 'g', -1, 64) }
	dur := func(k string, v time.Duration) { m[k] = v.String() }

	str("name", s.Name)
	m["seed"] = strconv.FormatInt(s.Seed, 10)
	num("rounds", s.Rounds)
	str("tracking.uri", redactURI(s.Tracking.URI))
	str("tracking.experiment", s.Tracking.Experiment)

	d := s.Data
	str("data.dataset", d.Dataset)
	flt("data.test_fraction", d.TestFraction)
	if d.Dataset == DatasetSynthetic {
		flt("data.synthetic.alpha", d.Synthetic.Alpha)
		flt("data.synthetic.beta", d.Synthetic.Beta)
		num("data.synthetic.dim", d.Synthetic.Dim)
		num("data.synthetic.classes", d.Synthetic.Classes)
		num("data.synthetic.samples_per_site", d.Synthetic.SamplesPerSite)
	} else {
		str("data.path", d.Path)
		str("data.partition.kind", d.Partition.Kind)
		switch d.Partition.Kind {
		case PartitionDirichlet:
			flt("data.partition.alpha", d.Partition.Alpha)
		case PartitionLabels:
			num("data.partition.labels", d.Partition.Labels)
		case PartitionShards:
			num("data.partition.shards_per_site", d.Partition.ShardsPerSite)
		}
	}

	mo := s.Model
	str("model.kind", mo.Kind)
	if len(mo.Hidden) > 0 {
		str("model.hidden", jsonList(mo.Hidden))
	}
	if len(mo.Conv) > 0 {
		str("model.conv", jsonList(mo.Conv))
	}
	if mo.Params != 0 {
		str("model.params", strconv.FormatInt(mo.Params, 10))
	}
	if len(mo.Command) > 0 {
		str("model.command", jsonList(mo.Command))
	}
	if mo.Exec.Mode != "" {
		str("model.exec.mode", mo.Exec.Mode)
	}
	if len(mo.Env) > 0 {
		keys := make([]string, 0, len(mo.Env))
		for k := range mo.Env {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		str("model.env", jsonList(keys))
	}
	if in := mo.Init; in != nil {
		if in.Site != "" {
			str("model.init.site", in.Site)
		}
		if in.Weights != "" {
			str("model.init.weights", in.Weights)
		}
	}

	if v := s.Sites; v.Virtual > 0 {
		str("sites.virtual", strconv.FormatInt(v.Virtual, 10))
		num("sites.per_round", v.ClientsPerRound)
		num("sites.workers", v.Workers)
		num("sites.samples_per_client", v.SamplesPerClient)
	}
	num("sites.count", s.Sites.Count)
	str("sites.names", jsonList(s.Sites.Names))
	num("sites.min_per_round", s.Sites.MinPerRound)
	flt("sites.fraction", s.Sites.Fraction)
	flt("sites.over_select", s.Sites.OverSelect)
	for i, adv := range s.Sites.Adversaries {
		p := "sites.adversaries." + strconv.Itoa(i) + "."
		str(p+"site", adv.Site)
		for j, at := range adv.Attacks {
			ap := p + "attacks." + strconv.Itoa(j) + "."
			str(ap+"kind", at.Kind)
			if at.Kind == AttackScale || at.Kind == AttackNoise || at.Factor != 0 {
				flt(ap+"factor", at.Factor)
			}
			if at.Kind == AttackClaimSamples || at.Samples != 0 {
				m[ap+"samples"] = strconv.FormatInt(at.Samples, 10)
			}
		}
	}

	t := s.Train
	num("train.epochs", t.Epochs)
	num("train.batch_size", t.BatchSize)
	flt("train.lr", t.LR)
	flt("train.momentum", t.Momentum)
	flt("train.weight_decay", t.WeightDecay)
	flt("train.lr_decay", t.LRDecay)

	for i, a := range s.Arms {
		p := "arms." + strconv.Itoa(i) + "."
		str(p+"name", a.Name)
		if c := a.Centralized; c != nil {
			num(p+"centralized.epochs", c.Epochs)
			if c.Site != "" {
				str(p+"centralized.site", c.Site)
			}
		}
		if st := a.Strategy; st != nil {
			str(p+"strategy.name", st.Name)
			if st.Name == StrategyFedProx || st.Mu != 0 {
				flt(p+"strategy.mu", st.Mu)
			}
			flt(p+"strategy.server_lr", st.ServerLR)
			if st.Name == StrategyTrimmedMean || st.Beta != 0 {
				flt(p+"strategy.beta", st.Beta)
			}
			if st.Name == StrategyKrum || st.Name == StrategyMultiKrum || st.F != 0 {
				num(p+"strategy.f", st.F)
			}
			if st.Name == StrategyMultiKrum || st.M != 0 {
				num(p+"strategy.m", st.M)
			}
			o := st.ServerOpt
			if adaptive(st.Name) || o.Eta != 0 {
				flt(p+"strategy.eta", o.Eta)
			}
			if st.Name == StrategyFedAdam || st.Name == StrategyFedYogi || o.Beta1 != 0 || o.Beta2 != 0 {
				flt(p+"strategy.beta1", o.Beta1)
				flt(p+"strategy.beta2", o.Beta2)
			}
			if adaptive(st.Name) || o.Tau != 0 {
				flt(p+"strategy.tau", o.Tau)
			}
			if st.Name == StrategyFedAvgM || o.Momentum != 0 {
				flt(p+"strategy.momentum", o.Momentum)
			}
			flt(p+"strategy.max_weight_fraction", st.MaxWeightFraction)
			str(p+"strategy.clip.mode", st.Clip.Mode)
			if st.Clip.Mode != ClipOff {
				flt(p+"strategy.clip.norm", st.Clip.Norm)
				flt(p+"strategy.clip.adaptive_factor", st.Clip.AdaptiveFactor)
			}
			if dp := st.DP; dp != nil {
				flt(p+"strategy.dp.clip", dp.Clip)
				flt(p+"strategy.dp.noise_multiplier", dp.NoiseMultiplier)
				flt(p+"strategy.dp.delta", dp.Delta)
			}
		}
		if o := a.Train; o != nil {
			if o.Epochs != nil {
				num(p+"train.epochs", *o.Epochs)
			}
			if o.BatchSize != nil {
				num(p+"train.batch_size", *o.BatchSize)
			}
			if o.LR != nil {
				flt(p+"train.lr", *o.LR)
			}
			if o.Momentum != nil {
				flt(p+"train.momentum", *o.Momentum)
			}
			if o.WeightDecay != nil {
				flt(p+"train.weight_decay", *o.WeightDecay)
			}
		}
	}

	num("eval.every", s.Eval.Every)
	if s.Eval.Site != "" {
		str("eval.site", s.Eval.Site)
	}
	dur("deadline.round", s.Deadline.Round)
	num("deadline.retries", s.Deadline.Retries)
	dur("energy.interval", s.Energy.Interval)
	flt("energy.carbon_g_per_kwh", s.Energy.CarbonGPerKWh)
	flt("energy.pue", s.Energy.PUE)
	flt("energy.cpu_watts_per_core", s.Energy.CPUWattsPerCore)
	if r := s.Register; r != nil {
		str("register.name", r.Name)
		if r.AliasBest != "" {
			str("register.alias_best", r.AliasBest)
		}
		str("register.best_metric", r.BestMetric)
	}
	return m
}

// jsonList writes a list compactly as JSON: [200,100] or ["a","b"].
func jsonList[T any](v []T) string {
	if v == nil {
		v = []T{}
	}
	b, err := json.Marshal(v)
	if err != nil { // ints and strings always marshal
		return ""
	}
	return string(b)
}

// redactURI hides the password of an http(s) URI with user info.
func redactURI(uri string) string {
	if !strings.Contains(uri, "@") {
		return uri
	}
	u, err := url.Parse(uri)
	switch {
	case err != nil:
		return "xxxxx" // cannot tell the password apart; show nothing
	case u.User == nil:
		return uri
	}
	return u.Redacted()
}
