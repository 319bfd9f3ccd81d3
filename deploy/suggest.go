package deploy

import "github.com/cohortfl/cohort/internal/strictyaml"

// synonym maps a word people write out of habit (another tool's name,
// normalized by [strictyaml.Normalize]) to this schema's key, or "".
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

// closest returns the key or value the user most likely meant by word, or
// "" ([strictyaml.Closest] with this package's synonyms).
func closest(word string, candidates []string) string {
	return strictyaml.Closest(word, candidates, synonym)
}
