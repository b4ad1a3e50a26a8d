export { pageData } from '../../bench/pagedata';
