# A hand-written multivariate problem in the archive's .ts format: two
# dimensions, cases of unequal length, missing values, string labels.
# Every header keyword but @seriesLength (see Beeps_TEST.ts, univariate,
# equal length, Windows line ends) appears once, in the archive's mixed case.
@problemName Toy Problem
@timeStamps false
@missing true
@univariate false
@dimensions 2
@equalLength false
@classLabel true up down flat

@data
0.5,1.0,?,2.0:1,2,3,4:up
3,2.5e-1,-1:  1, 1 ,1 :down
# a comment between cases
-0.0,+7:?,?:flat
1E2:-3.25:up
