# Reference numbers for trialflow's safety tables (analysis.safety) on the CDISC pilot
# (config/examples/cdiscpilot.yaml): ADAE records with TRTEMFL = "Y" of the safety population (ADSL SAFFL = "Y"),
# arms by ADSL TRT01A.
# - overview: subjects (and events) with any treatment-emergent AE, serious (AESER = "Y"), related (AEREL
#   POSSIBLE or PROBABLE), severe (AESEV = "SEVERE")
# - by system organ class (AEBODSYS) and preferred term (AEDECOD), sorted by subjects over all arms (then by
#   name, byte order), with each arm's risk difference against placebo (prop.test's Wald interval, no
#   continuity correction)
# - subjects by their maximum severity (MILD < MODERATE < SEVERE)
# - exposure-adjusted incidence: subjects with an event per 100 patient-years of ADSL TRTDURD (days / 365.25),
#   exact Poisson 95% CIs (poisson.test)
#
# Run from the repository root:  Rscript crates/analysis/tests/reference/safety.R  (or cargo xtask references)
# Writes crates/analysis/tests/reference/safety.json, compared by crates/cli/tests/it/public_trials.rs.

suppressPackageStartupMessages({
  library(foreign)
  library(jsonlite)
})

dir <- "data/examples/cdiscpilot/"
adsl <- read.xport(paste0(dir, "adsl.xpt"))
adae <- read.xport(paste0(dir, "adae.xpt"))
arms <- c("Placebo", "Xanomeline High Dose", "Xanomeline Low Dose")
saf <- adsl[adsl$SAFFL == "Y", c("USUBJID", "TRT01A", "TRTDURD")]
ae <- adae[adae$TRTEMFL == "Y" & adae$USUBJID %in% saf$USUBJID, ]
ae$arm <- saf$TRT01A[match(ae$USUBJID, saf$USUBJID)]
n_arm <- sapply(arms, function(a) sum(saf$TRT01A == a))
years <- sapply(arms, function(a) sum(saf$TRTDURD[saf$TRT01A == a], na.rm = TRUE)) / 365.25

row <- function(label, records) {
  subjects <- sapply(arms, function(a) length(unique(records$USUBJID[records$arm == a])))
  events <- sapply(arms, function(a) sum(records$arm == a))
  rd <- lapply(2:3, function(i) {
    t <- suppressWarnings(prop.test(c(subjects[i], subjects[1]), c(n_arm[i], n_arm[1]), correct = FALSE))
    c(unname(subjects[i] / n_arm[i] - subjects[1] / n_arm[1]), t$conf.int)
  })
  rate <- lapply(1:3, function(i) {
    p <- poisson.test(subjects[i], years[i])
    100 * c(unname(p$estimate), p$conf.int)
  })
  list(label = label, subjects = unname(subjects), events = unname(events),
       rd = lapply(rd, unname), rate = lapply(rate, unname))
}

sorted <- function(labels, records_of) {
  totals <- sapply(labels, function(l) length(unique(records_of(l)$USUBJID)))
  labels[order(-totals, labels, method = "radix")]
}

socs <- sorted(unique(ae$AEBODSYS), function(s) ae[ae$AEBODSYS == s, ])
by_soc <- lapply(socs, function(s) {
  r <- ae[ae$AEBODSYS == s, ]
  terms <- sorted(unique(r$AEDECOD), function(t) r[r$AEDECOD == t, ])
  c(row(s, r), list(terms = lapply(terms, function(t) row(t, r[r$AEDECOD == t, ]))))
})

levels <- c("MILD", "MODERATE", "SEVERE")
worst <- tapply(match(ae$AESEV, levels), ae$USUBJID, max)
worst_arm <- saf$TRT01A[match(names(worst), saf$USUBJID)]
severity <- lapply(seq_along(levels), function(l) unname(sapply(arms, function(a) sum(worst[worst_arm == a] == l))))

out <- list(
  versions = list(R = R.version.string),
  arms = arms, n = unname(n_arm), patient_years = unname(years), records = nrow(ae),
  overview = list(
    row("any", ae),
    row("serious", ae[ae$AESER == "Y", ]),
    row("related", ae[ae$AEREL %in% c("POSSIBLE", "PROBABLE"), ]),
    row("severe", ae[ae$AESEV == "SEVERE", ])),
  by_soc = by_soc,
  severity = list(levels = levels, subjects = severity))
writeLines(toJSON(out, digits = NA, auto_unbox = TRUE, pretty = TRUE),
           "crates/analysis/tests/reference/safety.json")
