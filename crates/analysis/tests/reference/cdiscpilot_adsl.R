# Reference numbers for config/examples/cdiscpilot_adsl.yaml: the CDISC pilot's ADSL (CDISCPILOT01), read from
# the SAS transport file by R's own reader (foreign::read.xport), so that the file's reading and the analysis are
# checked together. Safety population (SAFFL = "Y"), by actual treatment (TRT01A), reference Placebo; outcome:
# discontinued the study (EOSSTT = "DISCONTINUED").
#
# Run from the repository root:  Rscript crates/analysis/tests/reference/cdiscpilot_adsl.R
# Writes crates/analysis/tests/reference/cdiscpilot_adsl.json, which crates/cli/tests/it/public_trials.rs
# compares with the analysis.json of `trialflow pipeline … --config config/examples/cdiscpilot_adsl.yaml`, for
# the transport file and for the same data as Dataset-JSON.

library(foreign)
d <- read.xport("data/examples/cdiscpilot/adsl.xpt")
d <- d[d$SAFFL == "Y", ]
d$y <- as.integer(d$EOSSTT == "DISCONTINUED")
arms <- c("Placebo", "Xanomeline High Dose", "Xanomeline Low Dose")
z <- qnorm(0.975)
g <- function(x) sprintf("%.17g", x)
num_or_null <- function(x) if (is.null(x) || is.na(x)) "null" else g(x)

arm_json <- sapply(arms, function(a) {
  s <- d[d$TRT01A == a, ]
  sprintf('"%s": {"n": %d, "events": %d}', a, nrow(s), sum(s$y))
})

comparison <- function(a) {
  y1 <- d$y[d$TRT01A == a]; y0 <- d$y[d$TRT01A == "Placebo"]
  e1 <- sum(y1); n1 <- length(y1); e0 <- sum(y0); n0 <- length(y0)
  p1 <- e1 / n1; p0 <- e0 / n0
  rd <- p1 - p0; se_rd <- sqrt(p1 * (1 - p1) / n1 + p0 * (1 - p0) / n0)
  rr <- p1 / p0; se_lrr <- sqrt(1 / e1 - 1 / n1 + 1 / e0 - 1 / n0)
  or <- (e1 * (n0 - e0)) / ((n1 - e1) * e0); se_lor <- sqrt(1 / e1 + 1 / (n1 - e1) + 1 / e0 + 1 / (n0 - e0))
  tab <- matrix(c(e1, n1 - e1, e0, n0 - e0), nrow = 2, byrow = TRUE)
  chi <- chisq.test(tab, correct = FALSE)
  sprintf('"%s": {"rd": %s, "rd_ci": [%s, %s], "rr": %s, "rr_ci": [%s, %s], "or": %s, "or_ci": [%s, %s],
   "chi2": %s, "chi2_p": %s, "fisher_p": %s}',
          a, g(rd), g(rd - z * se_rd), g(rd + z * se_rd), g(rr), g(exp(log(rr) - z * se_lrr)),
          g(exp(log(rr) + z * se_lrr)), g(or), g(exp(log(or) - z * se_lor)), g(exp(log(or) + z * se_lor)),
          g(unname(chi$statistic)), g(chi$p.value), g(fisher.test(tab)$p.value))
}

describe <- function(x) {
  x <- x[!is.na(x)]
  q <- quantile(x, c(0.25, 0.5, 0.75), type = 7, names = FALSE)
  sprintf('{"n": %d, "mean": %s, "sd": %s, "median": %s, "q1": %s, "q3": %s}',
          length(x), g(mean(x)), g(sd(x)), g(q[2]), g(q[1]), g(q[3]))
}

numeric_vars <- c("AGE", "BMIBL", "HEIGHTBL", "WEIGHTBL", "EDUCLVL", "MMSETOT", "DURDIS")
table1 <- sapply(numeric_vars, function(v) {
  per_arm <- sapply(arms, function(a) sprintf('"%s": %s', a, describe(d[d$TRT01A == a, v])))
  missing <- sapply(arms, function(a) sprintf('"%s": %d', a, sum(is.na(d[d$TRT01A == a, v]))))
  x0 <- d[d$TRT01A == "Placebo", v]
  smd <- sapply(arms[-1], function(a) {
    x1 <- d[d$TRT01A == a, v]
    sprintf('"%s": %s', a, g((mean(x1, na.rm = TRUE) - mean(x0, na.rm = TRUE)) /
                               sqrt((var(x1, na.rm = TRUE) + var(x0, na.rm = TRUE)) / 2)))
  })
  sprintf('"%s": {%s, "missing": {%s}, "smd": {%s}}', v, paste(per_arm, collapse = ", "),
          paste(missing, collapse = ", "), paste(smd, collapse = ", "))
})

categorical_vars <- c("SEX", "RACE", "AGEGR1")
counts <- sapply(categorical_vars, function(v) {
  per_arm <- sapply(arms, function(a) {
    t <- table(d[d$TRT01A == a, v])
    sprintf('"%s": {%s}', a, paste(sprintf('"%s": %d', names(t), as.integer(t)), collapse = ", "))
  })
  sprintf('"%s": {%s}', v, paste(per_arm, collapse = ", "))
})

info <- lookup.xport("data/examples/cdiscpilot/adsl.xpt")[[1]]
labels <- sapply(c(numeric_vars, categorical_vars),
                 function(v) sprintf('"%s": "%s"', v, info$label[info$name == v]))
overall <- chisq.test(table(d$TRT01A, d$y), correct = FALSE)

json <- sprintf('{
 "versions": {"R": "%s", "foreign": "%s"},
 "population": "CDISCPILOT01 ADSL from adsl.xpt, SAFFL = Y, by TRT01A; outcome EOSSTT = DISCONTINUED",
 "n": %d, "outcome_missing": 0,
 "arms": {%s},
 "comparisons": {%s},
 "overall_chi_square": {"chi_square": %s, "df": %d, "p_value": %s},
 "table1": {%s},
 "categorical_counts": {%s},
 "labels": {%s},
 "subgroups": {}
}
', R.version.string, packageVersion("foreign"), nrow(d), paste(arm_json, collapse = ", "),
  paste(sapply(arms[-1], comparison), collapse = ",\n  "), g(unname(overall$statistic)),
  unname(overall$parameter), g(overall$p.value), paste(table1, collapse = ",\n  "),
  paste(counts, collapse = ",\n  "), paste(labels, collapse = ", "))
writeLines(json, "crates/analysis/tests/reference/cdiscpilot_adsl.json")
