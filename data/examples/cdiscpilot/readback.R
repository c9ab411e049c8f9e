# The transport file read back by R's foreign::read.xport (the third implementation beside trialflow and
# pyreadstat). Numbers as R holds them (dates stay day counts since 1960-01-01: read.xport applies no
# format), with 17 significant digits; character values as read. Run: Rscript readback.R
library(foreign)
d <- read.xport("adsl.xpt")
out <- d
for (c in names(out)) {
  if (is.numeric(out[[c]])) out[[c]] <- ifelse(is.na(out[[c]]), NA, formatC(out[[c]], digits = 17, format = "g"))
}
write.csv(out, "readback_r.csv", row.names = FALSE, na = "")
cat(R.version.string, "\n", file = "readback_r.version")
