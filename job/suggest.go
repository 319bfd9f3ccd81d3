package job

import "strings"

// synonym maps a word people write out of habit (another framework's name,
// normalized by [normalize]) to this schema's key, or "".
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

// normalize lowercases and drops '_', '-' and ' ', so that batchSize,
// batch-size and BATCH_SIZE all read as batchsize.
func normalize(s string) string {
	return strings.Map(func(r rune) rune {
		switch r {
		case '_', '-', ' ':
			return -1
		}
		return r
	}, strings.ToLower(s))
}

// closest returns the candidate the user most likely meant by word, or ""
// when none is close: the same word in another case or separator style, a
// known synonym, or one within a small edit distance.
func closest(word string, candidates []string) string {
	nw := normalize(word)
	if len(nw) > 64 {
		return ""
	}
	for _, c := range candidates {
		if normalize(c) == nw {
			return c
		}
	}
	if syn := synonym(nw); syn != "" {
		for _, c := range candidates {
			if c == syn {
				return c
			}
		}
	}
	limit := 1
	if len(nw) >= 5 {
		limit = 2
	}
	best, bestD := "", limit+1
	for _, c := range candidates {
		if d := editDistance(nw, normalize(c)); d < bestD {
			best, bestD = c, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance between a and b, in bytes.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
