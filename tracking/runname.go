package tracking

import (
	"fmt"
	"math/rand/v2"
)

// Words for generated run names, in the spirit of MLflow's
// adjective-noun-NNN names.
var (
	runNameAdjectives = []string{
		"able", "agile", "amazing", "amusing", "bold", "brave", "bright", "calm", "capable", "casual",
		"clean", "clever", "colorful", "crisp", "curious", "dapper", "dazzling", "delicate", "eager", "elegant",
		"fearless", "gentle", "glamorous", "gregarious", "honest", "hopeful", "humble", "industrious", "intelligent", "judicious",
		"kindly", "loud", "luminous", "magnificent", "merciful", "nebulous", "nimble", "patient", "placid", "polite",
		"rebellious", "resilient", "rogue", "salty", "sedate", "silent", "skillful", "smiling", "stately", "sincere",
		"tasteful", "thoughtful", "traveling", "unequaled", "upbeat", "valuable", "vaunted", "victorious", "welcoming", "wistful",
	}
	runNameAnimals = []string{
		"ant", "ape", "asp", "bass", "bat", "bear", "bee", "bird", "boar", "bug",
		"calf", "carp", "cat", "colt", "cow", "crab", "crane", "croc", "crow", "cub",
		"deer", "doe", "dog", "dolphin", "donkey", "dove", "duck", "eel", "elk", "fawn",
		"finch", "fish", "flea", "fly", "foal", "fowl", "fox", "frog", "gnat", "goat",
		"grouse", "gull", "hare", "hawk", "hen", "hog", "horse", "hound", "jay", "kit",
		"koi", "lamb", "lark", "loon", "lynx", "mare", "mink", "mole", "moose", "moth",
		"mouse", "mule", "newt", "owl", "ox", "panda", "penguin", "perch", "pig", "pug",
		"ram", "rat", "ray", "robin", "roo", "seal", "shark", "sheep", "shrew", "skink",
		"slug", "snail", "snake", "squid", "stag", "steed", "stoat", "swan", "toad", "trout",
		"turtle", "vole", "wasp", "whale", "wolf", "worm", "wren", "yak", "zebra",
	}
)

// generateRunName returns a random adjective-animal-NNN name.
func generateRunName() string {
	return fmt.Sprintf("%s-%s-%d",
		runNameAdjectives[rand.IntN(len(runNameAdjectives))],
		runNameAnimals[rand.IntN(len(runNameAnimals))],
		rand.IntN(1000))
}
