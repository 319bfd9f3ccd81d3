package deploy

import "strings"

// synonym maps a word people write out of habit (another tool's name,
// normalized by [normalize]) to this schema's key, or "".
func synonym(nw string) string {
	switch nw {
	case "clients", "participants":
		return "sites"
	case "servers", "server", "coordinator", "overseers":
		return "coordinators"
	case "admin", "users":
		return "admins"
	case "addr", "host", "endpoint":
		return "address"
	case "listenaddr", "listenaddress", "bind":
		return "listen"
	case "ssl", "mtls":
		return "tls"
	case "certificate", "crt", "certfile":
		return "cert"
	case "privatekey", "keyfile":
		return "key"
	case "cacert", "cafile", "rootca":
		return "ca"
	case "datasets":
		return "data"
	case "gpu", "devices", "cudavisibledevices":
		return "gpus"
	case "statedirectory", "state", "datadir":
		return "state_dir"
	case "sitetimeout", "waitforsites":
		return "site_wait"
	case "lifetime", "expiry", "ttl":
		return "validity"
	case "loglevel":
		return "level"
	case "logformat":
		return "format"
	case "workdirectory", "workingdirectory", "dir":
		return "workdir"
	case "enabled", "enable":
		return "allow"
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
