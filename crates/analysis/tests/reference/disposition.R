# Reference numbers for trialflow's disposition table (analysis.disposition) on the CDISC pilot
# (config/examples/cdiscpilot.yaml): every ADSL subject by TRT01A, end-of-study status EOSSTT (COMPLETED is
# completed), and the discontinued subjects by DCSREAS, most frequent first then by name (byte order).
#
# Run from the repository root:  Rscript crates/analysis/tests/reference/disposition.R (or cargo xtask
# references). Writes disposition.json, compared by crates/cli/tests/it/public_trials.rs.

suppressPackageStartupMessages({
  library(foreign)
  library(jsonlite)
})

adsl <- read.xport("data/examples/cdiscpilot/adsl.xpt")
arms <- c("Placebo", "Xanomeline High Dose", "Xanomeline Low Dose")
count <- function(rows) unname(sapply(arms, function(a) sum(rows & adsl$TRT01A == a)))
rows <- list(list(label = "Completed", reason = FALSE, subjects = count(adsl$EOSSTT == "COMPLETED")))
for (status in setdiff(unique(adsl$EOSSTT), "COMPLETED")) {
  rows[[length(rows) + 1]] <- list(label = status, reason = FALSE, subjects = count(adsl$EOSSTT == status))
  d <- adsl[adsl$EOSSTT == status, ]
  reasons <- unique(d$DCSREAS)
  totals <- sapply(reasons, function(r) sum(d$DCSREAS == r))
  for (r in reasons[order(-totals, reasons, method = "radix")]) {
    rows[[length(rows) + 1]] <- list(label = r, reason = TRUE,
                                     subjects = count(adsl$EOSSTT == status & adsl$DCSREAS == r))
  }
}
out <- list(versions = list(R = R.version.string), arms = arms,
            n = unname(sapply(arms, function(a) sum(adsl$TRT01A == a))), rows = rows)
writeLines(toJSON(out, digits = NA, auto_unbox = TRUE, pretty = TRUE),
           "crates/analysis/tests/reference/disposition.json")
