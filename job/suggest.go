package job

import "github.com/cohortfl/cohort/internal/strictyaml"

// synonym maps a word people write out of habit (another framework's name,
// normalized by [strictyaml.Normalize]) to this schema's key, or "".
func synonym(nw string) string {
	switch nw {
	case "learningrate":
		return "lr"
	case "numrounds":
		return "rounds"
	case "numepochs", "localepochs":
		return "epochs"
	case "bs":
		return "batch_size"
	case "wd", "l2":
		return "weight_decay"
	case "clients":
		return "sites"
	case "numclients", "numsites":
		return "count"
	case "minclients", "minfitclients", "minsites":
		return "min_per_round"
	case "fractionfit":
		return "fraction"
	case "carbonintensity":
		return "carbon_g_per_kwh"
	case "serverlearningrate":
		return "server_lr"
	case "proximalmu":
		return "mu"
	case "algorithm", "aggregator":
		return "strategy"
	case "fedmedian": // Flower's names for the robust strategies
		return "median"
	case "fedtrimmedavg", "trimmedavg":
		return "trimmed_mean"
	case "byzantine", "numbyzantine", "nummalicious", "faulty":
		return "f"
	case "trimratio", "trimfraction", "trim":
		return "beta"
	case "experimentname":
		return "experiment"
	case "trackinguri", "mlflowtrackinguri":
		return "uri"
	case "samplinginterval":
		return "interval"
	case "timeout":
		return "round"
	case "dirichletalpha":
		return "alpha"
	case "hiddenlayers":
		return "hidden"
	case "classesperclient", "classespersite":
		return "labels"
	case "evalevery", "evaluateevery":
		return "every"
	case "watts":
		return "cpu_watts_per_core"
	case "powerusageefficiency":
		return "pue"
	case "servermomentum":
		return "momentum"
	case "maxnorm", "normbound":
		return "norm"
	case "clippingnorm", "l2normclip": // Flower's and TF Privacy's DP clip
		return "clip"
	case "targetdelta":
		return "delta"
	case "attackers", "byzantinesites", "malicioussites", "malicious":
		return "adversaries"
	}
	return ""
}

// closest returns the key the user most likely meant by word, or ""
// ([strictyaml.Closest] with this schema's synonyms).
func closest(word string, candidates []string) string {
	return strictyaml.Closest(word, candidates, synonym)
}
