# Reference numbers for trialflow's lab shift tables (analysis.lab_shifts) on the CDISC pilot
# (config/examples/cdiscpilot.yaml): ADLBC (ALT, AST, BILI, CREAT) post-baseline records (AVISITN > 0) of the
# safety population (ADSL SAFFL = "Y"), arms by ADSL TRT01A. Per parameter and subject: the baseline indicator
# BNRIND (of the subject's first such record) against the worst ANRIND, levels N < L < H; new abnormalities =
# normal at baseline, worst L or H.
#
# Run from the repository root:  Rscript crates/analysis/tests/reference/labs.R (or cargo xtask references).
# Writes labs.json, compared by crates/cli/tests/it/public_trials.rs.

suppressPackageStartupMessages({
  library(foreign)
  library(jsonlite)
})

dir <- "data/examples/cdiscpilot/"
adsl <- read.xport(paste0(dir, "adsl.xpt"))
lb <- read.xport(paste0(dir, "adlbc.xpt"))
arms <- c("Placebo", "Xanomeline High Dose", "Xanomeline Low Dose")
levels <- c("N", "L", "H")
saf <- adsl[adsl$SAFFL == "Y", c("USUBJID", "TRT01A")]
post <- lb[!is.na(lb$AVISITN) & lb$AVISITN > 0 & lb$USUBJID %in% saf$USUBJID, ]
post$arm <- match(saf$TRT01A[match(post$USUBJID, saf$USUBJID)], arms)
post$level <- match(post$ANRIND, levels)
post$base <- match(post$BNRIND, levels)
post$base[is.na(post$base)] <- length(levels) + 1

parameters <- lapply(sort(unique(post$PARAMCD), method = "radix"), function(p) {
  r <- post[post$PARAMCD == p & !is.na(post$level), ]
  first <- !duplicated(r$USUBJID)
  s <- data.frame(USUBJID = r$USUBJID[first], arm = r$arm[first], base = r$base[first])
  s$worst <- tapply(r$level, r$USUBJID, max)[s$USUBJID]
  counts <- lapply(seq_len(length(levels) + 1), function(b)
    lapply(seq_along(levels), function(w)
      sapply(seq_along(arms), function(a) sum(s$base == b & s$worst == w & s$arm == a))))
  new_abnormal <- lapply(seq_along(arms), function(a)
    c(sum(s$base == 1 & s$worst > 1 & s$arm == a), sum(s$base == 1 & s$arm == a)))
  list(parameter = p, subjects = counts, new_abnormal = new_abnormal)
})
out <- list(versions = list(R = R.version.string), levels = levels, parameters = parameters)
writeLines(toJSON(out, digits = NA, auto_unbox = TRUE, pretty = TRUE),
           "crates/analysis/tests/reference/labs.json")
