package strictyaml

import "strings"

// Normalize lowercases s and drops '_', '-' and ' ', so that batchSize,
// batch-size and BATCH_SIZE all read as batchsize.
func Normalize(s string) string {
	return strings.Map(func(r rune) rune {
		switch r {
		case '_', '-', ' ':
			return -1
		}
		return r
	}, strings.ToLower(s))
}

// Closest returns the candidate the user most likely meant by word, or ""
// when none is close: the same word in another case or separator style, a
// synonym (synonym maps a [Normalize]d word to a key, "" when it knows
// none; nil knows none), or one within a small edit distance.
func Closest(word string, candidates []string, synonym func(string) string) string {
	nw := Normalize(word)
	if len(nw) > 64 {
		return ""
	}
	for _, c := range candidates {
		if Normalize(c) == nw {
			return c
		}
	}
	if synonym != nil {
		if syn := synonym(nw); syn != "" {
			for _, c := range candidates {
				if c == syn {
					return c
				}
			}
		}
	}
	limit := 1
	if len(nw) >= 5 {
		limit = 2
	}
	best, bestD := "", limit+1
	for _, c := range candidates {
		if d := editDistance(nw, Normalize(c)); d < bestD {
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
