# Reference for the overall test of a binary outcome across three or more arms: Pearson's chi-square on the
# k x 2 table, no continuity correction (R's chisq.test(table(arm, outcome), correct = FALSE)).
#
# Run from the repository root:  Rscript crates/analysis/tests/reference/k_arms.R
# Writes crates/analysis/tests/reference/k_arms.json, which crates/analysis/tests/reference.rs compares against.

colon <- read.csv("data/examples/colon.csv")
death <- colon[colon$etype == 2, ]
t <- chisq.test(table(death$rx, death$status), correct = FALSE)
json <- sprintf('{
 "versions": {"R": "%s"},
 "population": "survival::colon, etype == 2 (death), 929 patients; outcome status",
 "chi_square": %.17g, "df": %d, "p": %.17g
}
', R.version.string, unname(t$statistic), as.integer(t$parameter), t$p.value)
writeLines(json, "crates/analysis/tests/reference/k_arms.json", sep = "")
cat(json)
