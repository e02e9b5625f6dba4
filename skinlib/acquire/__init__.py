"""Getting the data: resumable HTTP fetching, class mirrors, the ISIC 2019 download and unpacking, Drive bundles, subsets and the SYNTHETIC set."""
