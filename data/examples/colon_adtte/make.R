# The colon-cancer trial (data/examples/colon.csv, R survival::colon: two records per patient, recurrence
# etype 1 and death etype 2) reshaped as CDISC ADaM holds time to event: a subject-level table (adsl.csv, one row
# per patient) and an ADTTE-shaped record table (adtte.csv: PARAMCD RECUR or DEATH, AVAL days, CNSR = 1
# censored), for config/examples/colon_adtte.yaml.
#
# Run from the repository root:  Rscript data/examples/colon_adtte/make.R

colon <- read.csv("data/examples/colon.csv")
id <- sprintf("COLON-%04d", colon$id)
death <- colon$etype == 2
adsl <- data.frame(USUBJID = id[death], TRT01A = colon$rx[death], SEX = colon$sex[death],
                   AGE = colon$age[death], NODES = colon$nodes[death], OBSTRUCT = colon$obstruct[death])
adtte <- data.frame(USUBJID = id, PARAMCD = ifelse(death, "DEATH", "RECUR"),
                    PARAM = ifelse(death, "Time to death", "Time to recurrence or death"),
                    AVAL = colon$time, CNSR = 1 - colon$status)
write.csv(adsl, "data/examples/colon_adtte/adsl.csv", row.names = FALSE, na = "")
write.csv(adtte, "data/examples/colon_adtte/adtte.csv", row.names = FALSE, na = "")
